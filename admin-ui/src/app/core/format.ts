export function formatUptime(secs: number | undefined | null): string {
  if (secs == null || !Number.isFinite(secs)) return '—';
  const s = Math.floor(secs);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function formatMemory(mb: number | undefined | null): string {
  if (mb == null || !Number.isFinite(mb)) return '—';
  if (mb >= 1024) return `${(mb / 1024).toFixed(2)} GiB`;
  return `${mb.toFixed(mb < 10 ? 1 : 0)} MiB`;
}

export function formatPercent(p: number | undefined | null): string {
  if (p == null || !Number.isFinite(p)) return '—';
  return `${p.toFixed(p < 10 ? 1 : 0)}%`;
}

export function formatCount(n: number | undefined | null): string {
  if (n == null || !Number.isFinite(n)) return '—';
  return n.toLocaleString('en-US');
}

/** An RFC 3339 time as a local clock time, with the date when it is not today. */
export function formatClock(iso: string, now = new Date()): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const pad = (n: number) => String(n).padStart(2, '0');
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

/** An RFC 3339 time (or epoch milliseconds) relative to now: "just now", "3 min ago", "2 h ago". */
export function formatAgo(time: string | number, now = Date.now()): string {
  const t = typeof time === 'number' ? time : new Date(time).getTime();
  if (Number.isNaN(t)) return String(time);
  const s = Math.round((now - t) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} days ago`;
}

/** Requests per second with a unit that stays readable from 0.01 to thousands. */
export function formatRate(r: number | undefined | null): string {
  if (r == null || !Number.isFinite(r)) return '—';
  if (r === 0) return '0 req/s';
  if (r < 1) return `${(r * 60).toFixed(r * 60 < 10 ? 1 : 0)} req/min`;
  return `${r.toFixed(r < 10 ? 1 : 0)} req/s`;
}

/** A latency in milliseconds: µs below 1 ms, s above 1000 ms. */
export function formatMs(ms: number | undefined | null): string {
  if (ms == null || !Number.isFinite(ms)) return '—';
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** A share (0 to 1) as a percentage. */
export function formatShare(x: number | undefined | null): string {
  if (x == null || !Number.isFinite(x)) return '—';
  if (x === 0) return '0%';
  return `${(x * 100).toFixed(x < 0.1 ? 2 : 1)}%`;
}
