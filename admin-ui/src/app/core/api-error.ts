import { Problem } from './models';

/** An error from the gateway (a problem+json body) or from the network. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(problem.detail || problem.title);
    this.name = 'ApiError';
  }

  /** 0: the gateway could not be reached at all. */
  get unreachable(): boolean {
    return this.status === 0;
  }

  static network(detail: string): ApiError {
    return new ApiError(0, {
      type: 'about:blank#network',
      title: 'Gateway unreachable',
      status: 0,
      detail,
    });
  }

  /** Builds an ApiError from any HTTP answer that is not a success. */
  static fromBody(status: number, statusText: string, body: string): ApiError {
    let problem: Problem | undefined;
    try {
      const parsed = JSON.parse(body) as Partial<Problem>;
      if (parsed && typeof parsed === 'object' && ('title' in parsed || 'detail' in parsed)) {
        problem = {
          type: parsed.type ?? 'about:blank',
          title: parsed.title ?? statusText,
          status: parsed.status ?? status,
          detail: parsed.detail ?? '',
          instance: parsed.instance,
          request_id: parsed.request_id,
          errors: Array.isArray(parsed.errors) ? parsed.errors : undefined,
        };
      }
    } catch {
      // not JSON: fall through
    }
    problem ??= {
      type: 'about:blank',
      title: statusText || `HTTP ${status}`,
      status,
      detail: body.slice(0, 500),
    };
    return new ApiError(status, problem);
  }
}

/** A one-line, human description of any error. */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) {
    const p = err.problem;
    if (err.status === 0) return `Gateway unreachable: ${p.detail}`;
    if (err.status === 401) return `Not signed in or key refused (401): ${p.detail || p.title}`;
    if (err.status === 403) return `Your API key lacks the scope for this (403): ${p.detail || p.title}`;
    return p.detail ? `${p.title} (${p.status}): ${p.detail}` : `${p.title} (${p.status})`;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}
