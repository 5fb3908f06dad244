// Type declarations for aiosfu.js, the browser SDK (docs/browser.md). Kept by hand next
// to the module; tests/test_js_sdk_package.py type-checks an application against them
// with tsc and fails when the module exports or the Client's methods drift from them.

export class SignalError extends Error {
  constructor(code: string, reason: string);
  /** The server's errorCode (or "closed", "timeout", "removed" from the SDK itself). */
  readonly code: string;
  /** The server's errorReason. */
  readonly reason: string;
}

/** `ws(s)://<this page's host>/ws`, for a page served by aiosfu itself. */
export function defaultUrl(): string;

export interface Grants {
  roomJoin: boolean;
  roomAdmin: boolean;
  roomRecord: boolean;
  canPublish: boolean;
  canPublishSources: string[];
  canSubscribe: boolean;
  canPublishData: boolean;
  hidden: boolean;
}

/** What an open-mode server (no API keys) allows. */
export const OPEN_GRANTS: Readonly<Grants>;

export interface MediaInfo {
  audio: boolean;
  video: boolean;
  audiotype: number;
  videotype: number;
  data?: boolean;
}

export interface StreamInfo {
  rid: string;
  uid: string;
  mid: string;
  sfuid: string;
  minfo: MediaInfo;
}

export interface MemberInfo {
  rid: string;
  uid: string;
  signalid: string;
}

export interface JoinResult {
  pubs: StreamInfo[];
  users: MemberInfo[];
  mode?: "sfu" | "p2p";
  capacity?: number;
  grants?: Grants;
  iceServers?: RTCIceServer[];
  [extra: string]: unknown;
}

export interface JoinOptions {
  mode?: "sfu" | "p2p";
  capacity?: number;
}

export interface PublishOptions {
  /** Data channels the SFU relays to the room's peers with a channel of the same label. */
  dataChannels?: string[];
}

export interface Publication {
  rid: string;
  mid: string;
  sfuid: string;
  pc: RTCPeerConnection;
  channels: Map<string, RoomChannel>;
  stream: MediaStream | null;
  options: PublishOptions;
}

export interface Subscription {
  rid: string;
  mid: string;
  sid: string;
  sfuid: string;
  pc: RTCPeerConnection;
  stream: MediaStream;
  minfo: MediaInfo;
  /** performance.now() when the answer arrived. */
  answerAt: number;
}

export interface ClientOptions {
  /** ms between keepalives per room (default 10000). */
  keepaliveInterval?: number;
  /** ms to wait for full ICE gathering (default 2000). */
  iceGatheringTimeout?: number;
  /** ms before a request is abandoned (default 15000). */
  requestTimeout?: number;
  /** ms before connect() gives up (default 10000). */
  connectTimeout?: number;
  /** Skip fetching /api/ice-servers. */
  iceServers?: RTCIceServer[];
  /** "relay": media only through TURN. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** Reopen a dropped socket and restore rooms, publications, subscriptions (default true). */
  reconnect?: boolean;
  /** ms before the first retry, doubled after each failure (default 500). */
  reconnectDelay?: number;
  /** ms between retries at most (default 10000). */
  reconnectMaxDelay?: number;
}

export interface RestoreFailure {
  rid: string;
  mid?: string;
  error: unknown;
}

/** Events of Client and what their listeners receive. */
export interface ClientEvents {
  "peer-join": MemberInfo;
  "peer-leave": MemberInfo;
  "stream-add": StreamInfo;
  "stream-remove": StreamInfo;
  broadcast: { rid: string; uid: string; data: unknown };
  "publish-failed": { rid: string; mid: string; reason: string };
  "subscribe-failed": { rid: string; mid: string; sid: string; reason: string };
  "grants-updated": { rid: string; uid: string; grants: Grants };
  close: { code: number; reason: string };
  "keepalive-error": { rid: string; error: unknown };
  reconnecting: { attempt: number; delay: number };
  republished: { oldMid: string; publication: Publication };
  resubscribed: { mid: string; subscription: Subscription };
  reconnected: {
    rooms: string[];
    publications: Publication[];
    subscriptions: Subscription[];
    failed: RestoreFailure[];
  };
}

declare class Emitter<Events> {
  /** Returns a function that removes the listener. */
  on<K extends keyof Events & string>(event: K, listener: (data: Events[K]) => void): () => void;
  on(event: string, listener: (data: any) => void): () => void;
  off(event: string, listener: (data: any) => void): void;
  emit(event: string, data: unknown): void;
}

export class Client extends Emitter<ClientEvents> {
  constructor(options?: ClientOptions);
  readonly options: Required<Omit<ClientOptions, "iceServers" | "iceTransportPolicy">> &
    ClientOptions;
  ws: WebSocket | null;
  uid: string | null;
  token: string | null;
  iceServers: RTCIceServer[];
  /** Ours, by mid. */
  publications: Map<string, Publication>;
  /** Ours, by mid. */
  subscriptions: Map<string, Subscription>;
  grants: Map<string, Grants>;

  /** Whether we hold `grant` in room `rid`. */
  can(rid: string, grant: keyof Grants): boolean;
  connect(url: string, uid: string, options?: { token?: string }): Promise<void>;
  /** One request in the seed-002 envelope; resolves with the response's data. */
  request(method: string, data?: object): Promise<any>;
  join(rid: string, options?: JoinOptions): Promise<JoinResult>;
  leave(rid: string): Promise<void>;
  publish(rid: string, stream: MediaStream | null, options?: PublishOptions): Promise<Publication>;
  unpublish(rid: string, mid: string): Promise<void>;
  subscribe(rid: string, mid: string, sfuid: string, minfo?: Partial<MediaInfo>): Promise<Subscription>;
  unsubscribe(rid: string, mid: string): Promise<void>;
  broadcast(rid: string, data: unknown): Promise<void>;
  record(rid: string, mid: string): Promise<any>;
  stopRecord(rid: string, mid: string): Promise<any>;
  updateGrants(rid: string, uid: string, grants: Partial<Grants>): Promise<any>;
  mute(rid: string, mid: string, kind: "audio" | "video", muted?: boolean): Promise<any>;
  remove(rid: string, uid: string): Promise<any>;
  raiseHand(rid: string): Promise<any>;
  lowerHand(rid: string, uid?: string): Promise<any>;
  /** Close the socket and every peer connection; never reconnects after this. */
  close(): void;
}

export interface RoomChannelEvents {
  open: Record<string, never>;
  close: Record<string, never>;
  message: { from: string; data: unknown; to?: string };
  dropped: number;
  error: { code: string; reason: string };
}

export class RoomChannel extends Emitter<RoomChannelEvents> {
  constructor(channel: RTCDataChannel);
  readonly channel: RTCDataChannel;
  readonly label: string;
  readonly isOpen: boolean;
  send(data: unknown, to?: string): void;
  sendBytes(payload: Uint8Array, to?: string): void;
}

export interface PeerLink {
  uid: string;
  pc: RTCPeerConnection;
  polite: boolean;
  stream: MediaStream;
  channel: RTCDataChannel | null;
}

export interface MeshEvents {
  link: PeerLink;
  channel: { uid: string; channel: RTCDataChannel };
  track: { uid: string; track: MediaStreamTrack; stream: MediaStream };
  message: { from: string; data: unknown };
  "link-state": { uid: string; state: RTCPeerConnectionState };
  "link-closed": { uid: string };
}

export class Mesh extends Emitter<MeshEvents> {
  constructor(
    client: Client,
    rid: string,
    options?: { stream?: MediaStream | null; dataChannel?: string },
  );
  readonly client: Client;
  readonly rid: string;
  links: Map<string, PeerLink>;
  join(options?: { capacity?: number }): Promise<JoinResult>;
  /** Returns how many peers it was sent to. */
  send(data: unknown, to?: string): number;
  close(): void;
}
