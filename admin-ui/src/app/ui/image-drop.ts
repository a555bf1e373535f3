import { ChangeDetectionStrategy, Component, input, output, signal } from '@angular/core';
import { accepts } from '../core/media';

/**
 * An image input: a file picker and a drop zone. Emits the chosen file when its type is one the
 * capability declares; says why otherwise (the gateway would answer 415).
 */
@Component({
  selector: 'app-image-drop',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div
      class="rounded-md border-2 border-dashed p-4 text-center text-sm"
      [class]="over() ? 'border-blue-600 bg-blue-50 dark:bg-slate-800' : 'border-slate-400'"
      (dragover)="$event.preventDefault(); over.set(true)"
      (dragleave)="over.set(false)"
      (drop)="drop($event)"
      data-testid="image-drop"
    >
      <label [for]="inputId()" class="label">{{ label() }}@if (required()) {<span class="text-red-700" aria-hidden="true"> *</span>}</label>
      <input [id]="inputId()" type="file" class="mx-auto block text-sm" [accept]="accept()" (change)="pick($any($event.target).files)" data-testid="image-file" />
      <p class="mt-1 text-xs text-slate-600">or drop an image here ({{ accept() }})@if (name()) { · <span class="font-medium" data-testid="image-name">{{ name() }}</span>}</p>
      @if (error()) {<p role="alert" class="mt-1 text-red-800">{{ error() }}</p>}
    </div>
  `,
})
export class ImageDrop {
  readonly accept = input('image/*');
  readonly label = input('image');
  readonly inputId = input('f-image');
  readonly required = input(false);
  readonly picked = output<File>();

  protected readonly over = signal(false);
  protected readonly error = signal<string | null>(null);
  protected readonly name = signal<string | null>(null);

  protected drop(event: DragEvent): void {
    event.preventDefault();
    this.over.set(false);
    this.pick(event.dataTransfer?.files ?? null);
  }

  protected pick(files: FileList | null): void {
    const file = files?.[0];
    if (!file) return;
    if (!accepts(this.accept(), file.type)) {
      this.error.set(`${file.name} is ${file.type || 'of an unknown type'}; this capability takes ${this.accept()}.`);
      return;
    }
    this.error.set(null);
    this.name.set(file.name);
    this.picked.emit(file);
  }
}
