// Shapes of the gateway's REST and WebSocket API (core/src/wire.rs).

export type PluginStatus = 'stopped' | 'starting' | 'running' | 'stopping' | 'error';
export const PLUGIN_STATUSES: readonly PluginStatus[] = ['running', 'starting', 'stopping', 'stopped', 'error'];

export type JsonSchema = boolean | { [key: string]: unknown };

export interface Capability {
  id: string;
  name: string;
  description: string;
  input_schema: JsonSchema;
  output_schema: JsonSchema;
}

export interface Resources {
  memory?: string;
  cpu?: string;
  timeout_secs: number;
  max_concurrency: number;
  gpu_count: number;
  gpu_vendor?: string;
}

export interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  last_transition_time: string;
}

export interface Instance {
  name: string;
  state: string;
  ready: boolean;
  endpoint?: string;
  pid?: number;
  restarts: number;
  started_at?: string;
  last_error?: string;
}

export interface PluginInfo {
  id: string;
  name: string;
  version: string;
  description: string;
  author: string;
  implementation: string;
  status: PluginStatus;
  enabled: boolean;
  replicas: number;
  ready_replicas: number;
  endpoint?: string;
  last_error?: string;
  capabilities: Capability[];
  config: Record<string, unknown>;
  resources: Resources;
  conditions?: Condition[];
  instances: Instance[];
}

export interface Telemetry {
  plugin_id: string;
  cpu_percent: number;
  memory_mb: number;
  uptime_secs: number;
  request_count: number;
  error_count: number;
  last_error?: string | null;
  replicas: number;
  extra?: Record<string, unknown>;
}

export interface LogLine {
  ts: string;
  stream: string;
  message: string;
}

export interface Logs {
  plugin_id: string;
  lines: LogLine[];
}

export type Scope = 'read' | 'invoke' | 'admin' | string;

export interface WhoAmI {
  key_id: string;
  scopes: Scope[];
}

export interface FieldError {
  field: string;
  message: string;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  request_id?: string;
  errors?: FieldError[];
}

export type LiveMessage =
  | ({ type: 'telemetry' } & Telemetry)
  | ({ type: 'log'; plugin_id: string } & LogLine)
  | { type: 'status'; plugin: PluginInfo };

export type PluginAction = 'start' | 'stop' | 'restart';
