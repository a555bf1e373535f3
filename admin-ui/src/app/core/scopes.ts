// What a key's scopes allow, as the gateway decides it (gateway/src/auth.rs):
//   read                        list and get plugins, telemetry, logs, WebSockets
//   invoke | invoke:<plugin> | invoke:<plugin>/<capability>   invoke
//   admin                       everything, including start, stop, restart and config

export function canRead(scopes: readonly string[]): boolean {
  return scopes.includes('read') || scopes.includes('admin');
}

export function isAdmin(scopes: readonly string[]): boolean {
  return scopes.includes('admin');
}

/** May invoke `capability` of `plugin` (with no capability: some capability of it). */
export function canInvoke(scopes: readonly string[], plugin: string, capability?: string): boolean {
  return scopes.some((s) => {
    if (s === 'admin' || s === 'invoke') return true;
    if (!s.startsWith('invoke:')) return false;
    const rest = s.slice('invoke:'.length);
    const slash = rest.indexOf('/');
    const p = slash < 0 ? rest : rest.slice(0, slash);
    const c = slash < 0 ? undefined : rest.slice(slash + 1);
    if (p !== plugin) return false;
    return c === undefined || capability === undefined || c === capability;
  });
}

/** May invoke anything at all (shows the playground). */
export function canInvokeSomething(scopes: readonly string[]): boolean {
  return scopes.some((s) => s === 'admin' || s === 'invoke' || s.startsWith('invoke:'));
}
