// What the plugin page and card say about a plugin's replica count: who owns it, the figures
// (min / current / wanted / max) and the history of its changes. Pure functions of a PluginInfo,
// so the page follows every status push without state of its own.
import { Instance, PluginInfo, ScaleEvent, ScalingInfo } from './models';

/** Instance states that no longer count as current: being drained, or gone. */
const LEAVING: ReadonlySet<Instance['state']> = new Set(['stopping', 'stopped']);

/** Instances that exist and are not on their way out (starting, running, backing off…). */
export function liveInstances(p: Pick<PluginInfo, 'instances'>): number {
  return (p.instances ?? []).filter((i) => !LEAVING.has(i.state)).length;
}

/** "in-flight target 2 per replica", "CPU target 70 %". */
export function targetText(s: Pick<ScalingInfo, 'metric' | 'target'>): string {
  switch (s.metric) {
    case 'inFlight':
      return `in-flight target ${s.target} per replica`;
    case 'cpu':
      return `CPU target ${s.target} %`;
    default:
      return `${s.metric} target ${s.target}`;
  }
}

/** Who owns the replica count, in words. */
export function ownerText(p: Pick<PluginInfo, 'scaling_owner' | 'scaling'>): string {
  const target = p.scaling ? `, ${targetText(p.scaling)}` : '';
  switch (p.scaling_owner) {
    case 'replicas':
      return 'fixed by spec.replicas (kubectl scale)';
    case 'autoscaler':
      return `bkg autoscaler${target}`;
    case 'hpa':
      return `HorizontalPodAutoscaler${target}`;
    default:
      return p.scaling_owner || 'unknown';
  }
}

export interface ScaleFigures {
  /** `spec.scaling` bounds; absent for a fixed count. */
  min?: number;
  max?: number;
  /** Live instances (see liveInstances). */
  current: number;
  ready: number;
  /** Replicas wanted now: the fixed count or the autoscaler's latest decision. */
  wanted: number;
  /** The top of the gauge: every figure fits below it. */
  scale: number;
}

export function scaleFigures(p: Pick<PluginInfo, 'instances' | 'ready_replicas' | 'replicas' | 'scaling'>): ScaleFigures {
  const current = liveInstances(p);
  const s = p.scaling ?? undefined;
  return {
    min: s?.min_replicas,
    max: s?.max_replicas,
    current,
    ready: p.ready_replicas,
    wanted: p.replicas,
    scale: Math.max(1, s?.max_replicas ?? 0, current, p.ready_replicas, p.replicas),
  };
}

/** The card's compact line after ready/wanted: "autoscaled 0–4", or '' for a fixed count. */
export function scaleRange(p: Pick<PluginInfo, 'scaling'>): string {
  return p.scaling ? `autoscaled ${p.scaling.min_replicas}–${p.scaling.max_replicas}` : '';
}

/** The scale history newest first (the API sends it oldest first). */
export function newestFirst(history: readonly ScaleEvent[] | undefined): ScaleEvent[] {
  return [...(history ?? [])].reverse();
}
