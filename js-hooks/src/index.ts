export * from "./contexts.js";
export * from "./types.js";
export { useApiClient, type ApiClient, type UseApiClientOptions } from "./hooks/useApiClient.js";
export * from "./hooks/useRealtimeRun.js";
export * from "./hooks/useRealtimeRunsWithTag.js";
export * from "./hooks/useRealtimeBatch.js";
export * from "./hooks/useRun.js";
export * from "./hooks/useTaskTrigger.js";
export * from "./hooks/useRealtimeTaskTrigger.js";
export * from "./hooks/useRealtimeStream.js";
export * from "./hooks/useRealtimeRunWithStreams.js";
export { ApiError, RealtimeError } from "./client/errors.js";
export {
  RealtimeClient,
  type FeedListener,
  type FeedState,
  type FeedSubscription,
  type RealtimeClientOptions,
  type SendInputResult,
  type StreamListener,
  type StreamState,
  type StreamSubscription,
  type SubscribeOptions,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client/RealtimeClient.js";
export {
  configureRealtimeClients,
  getRealtimeClient,
  resetRealtimeClients,
  toWebSocketURL,
} from "./client/registry.js";
export type { FeedSpec, StreamSpec, WireRun, ErrorCode } from "./client/protocol.js";
export * from "./hooks/useInputStreamSend.js";
export * from "./hooks/useWaitToken.js";
