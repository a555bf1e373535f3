// Shapes of the gateway's REST and WebSocket API. The wire types come from the gateway's OpenAPI
// document (`bkg openapi`), generated into api.schema.json and api.d.ts by `scripts/ui.sh gen-types`
// and checked for drift by `make test` (scripts/test.d/41-ui-types.sh): never edit those two by hand.
// What the document does not describe (UI-only types) is written here.
import type { components } from './api';

type Schemas = components['schemas'];

export type Capability = Schemas['Capability'];
export type Cost = Schemas['Cost'];
export type Resources = Schemas['ResourcesInfo'];
export type Condition = Schemas['ConditionInfo'];
export type Instance = Schemas['Instance'];
export type PluginInfo = Schemas['PluginInfo'];
export type PluginStatus = PluginInfo['status'];
export type ScalingInfo = Schemas['ScalingInfo'];
export type ScaleEvent = Schemas['ScaleEvent'];
export type Telemetry = Schemas['Telemetry'];
export type TelemetrySample = Schemas['TelemetrySample'];
export type TelemetryHistory = Schemas['TelemetryHistory'];
export type PluginEvent = Schemas['PluginEvent'];
export type Overview = Schemas['Overview'];
export type LogLine = Schemas['LogLine'];
export type Logs = Schemas['Logs'];
export type FieldError = Schemas['FieldError'];
export type Problem = Schemas['Problem'];
export type InvokeRequest = Schemas['InvokeRequest'];
export type WhoAmI = Schemas['WhoAmI'];
export type KeyInfo = Schemas['KeyInfo'] & KeyTokenFields;
export type CreateKey = Schemas['CreateKey'] & Pick<KeyTokenFields, 'tokens_per_minute'>;
export type CreatedKey = Schemas['CreatedKey'];
/** One message on the WebSockets /ws/plugins and /ws/plugins/{id}, told apart by `type`. */
export type LiveMessage = Schemas['LiveMessage'];

/** Every status, in the order the dashboard's filter shows them. */
export const PLUGIN_STATUSES = ['running', 'starting', 'stopping', 'stopped', 'error'] as const satisfies readonly PluginStatus[];
// Does not compile when the API's enum gains a status that PLUGIN_STATUSES lacks.
type Never<T extends never> = T;
export type EveryStatusListed = Never<Exclude<PluginStatus, (typeof PLUGIN_STATUSES)[number]>>;

// UI-only types.

/**
 * What `GET /api/keys` gains with the OpenAI routes: the key's generated-token usage and its limit
 * (`POST /api/keys` takes the limit). Optional here so an older gateway, which sends neither, shows
 * "not reported" rather than zeros; once api.d.ts is regenerated from a gateway that has them, the
 * generated fields take over (an intersection with these stays compatible) and this can go.
 */
export interface KeyTokenFields {
  usage?: TokenUsageCount;
  /** Prompt plus completion tokens this key may use per minute; null or absent: no limit. */
  tokens_per_minute?: number | null;
}

export interface TokenUsageCount {
  prompt_tokens: number;
  completion_tokens: number;
}

export type Scope = 'read' | 'invoke' | 'admin' | string;

export type PluginAction = 'start' | 'stop' | 'restart';
