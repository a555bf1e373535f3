import { ChangeDetectionStrategy, Component, computed, input } from '@angular/core';
import { Detections, place } from '../core/media';

/**
 * The image sent, with the returned boxes drawn over it. Boxes are positioned in percent of the
 * image, so they follow whatever size the image is shown at; then the faces and their scores.
 */
@Component({
  selector: 'app-face-boxes',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <figure class="mb-3" data-testid="face-view">
      @if (src()) {
        <div class="relative inline-block max-w-full">
          <img [src]="src()" alt="The image sent, with the detected faces outlined" class="block h-auto max-w-full" data-testid="face-image" />
          @for (b of boxes(); track $index; let i = $index) {
            <div
              class="pointer-events-none absolute border-2 border-emerald-400 shadow-[0_0_0_1px_rgba(0,0,0,0.6)]"
              [style.left.%]="b.left" [style.top.%]="b.top" [style.width.%]="b.width" [style.height.%]="b.height"
              [attr.aria-label]="'Face ' + (i + 1)"
              data-testid="face-box"
            >
              <span class="absolute -top-4 left-0 bg-emerald-400 px-0.5 text-[10px] leading-none text-black">{{ i + 1 }}</span>
            </div>
          }
        </div>
      }
      <figcaption class="mt-1 text-sm font-semibold" data-testid="face-count">
        {{ detections().faces.length }} face{{ detections().faces.length === 1 ? '' : 's' }} in {{ detections().width }}×{{ detections().height }}
      </figcaption>
    </figure>
    @if (detections().faces.length) {
      <table class="mb-3 w-full text-left font-mono text-xs" data-testid="face-list">
        <thead><tr><th scope="col">#</th><th scope="col">x</th><th scope="col">y</th><th scope="col">width</th><th scope="col">height</th><th scope="col">score</th></tr></thead>
        <tbody>
          @for (f of detections().faces; track $index; let i = $index) {
            <tr><td>{{ i + 1 }}</td><td>{{ f.x }}</td><td>{{ f.y }}</td><td>{{ f.width }}</td><td>{{ f.height }}</td><td>{{ f.score.toFixed(2) }}</td></tr>
          }
        </tbody>
      </table>
    }
  `,
})
export class FaceBoxes {
  /** The image as sent (an object URL or a data: URL); none when only the answer is known. */
  readonly src = input<string | null>(null);
  readonly detections = input.required<Detections>();

  protected readonly boxes = computed(() => {
    const d = this.detections();
    return d.faces.map((f) => place(f, d.width, d.height));
  });
}
