/**
 * aiosfu browser SDK: signaling over one WebSocket, one RTCPeerConnection per
 * publish and per subscribe. Dependency-free ES module.
 *
 * @module aiosfu
 */

const DEFAULTS = {
  keepaliveInterval: 10_000,
  iceGatheringTimeout: 2_000,
  requestTimeout: 15_000,
  connectTimeout: 10_000,
};

/**
 * A failed request. `code`/`reason` carry the server's errorCode/errorReason
 * verbatim so callers can branch on the code without parsing messages.
 */
export class SignalError extends Error {
  /**
   * @param {string} code
   * @param {string} reason
   */
  constructor(code, reason) {
    super(`${code}: ${reason}`);
    this.name = "SignalError";
    this.code = code;
    this.reason = reason;
  }
}

/**
 * The default signaling URL for a page served by aiosfu itself, so a page
 * works unchanged behind TLS or a reverse proxy.
 * @returns {string}
 */
export function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/**
 * What a peer may do in a room (docs/security.md). A server without API keys
 * (open mode) sends no grants: everything but administration is allowed.
 */
export const OPEN_GRANTS = Object.freeze({
  roomJoin: true, roomAdmin: false, roomRecord: true, canPublish: true,
  canPublishSources: [], canSubscribe: true, canPublishData: true, hidden: false,
});

/**
 * Resolve once ICE gathering has finished. The server does not accept trickled
 * candidates, so the offer must already contain every candidate. The timeout
 * bounds the wait when an unreachable STUN/TURN server keeps gathering open;
 * the candidates found so far are usually enough.
 * @param {RTCPeerConnection} pc
 * @param {number} timeoutMs
 * @returns {Promise<void>}
 */
function iceGatheringDone(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onState);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const onState = () => {
      if (pc.iceGatheringState === "complete") finish();
    };
    // A null candidate is the end-of-candidates signal; some browsers emit it
    // before the state change, so either one ends the wait.
    const onCandidate = (event) => {
      if (!event.candidate) finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    pc.addEventListener("icegatheringstatechange", onState);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

/** Minimal emitter; notifications are dispatched by their method name. */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * @param {string} event
   * @param {(data: any) => void} listener
   * @returns {() => void} call to remove the listener
   */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  /**
   * @param {string} event
   * @param {(data: any) => void} listener
   */
  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  /**
   * A throwing listener must not stop the others or break the socket's
   * message handler, so errors are reported asynchronously instead.
   * @param {string} event
   * @param {any} data
   */
  emit(event, data) {
    for (const listener of [...(this._listeners.get(event) ?? [])]) {
      try {
        listener(data);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

/**
 * @typedef {object} MediaInfo
 * @property {boolean} audio
 * @property {boolean} video
 * @property {number} audiotype
 * @property {number} videotype
 */

/**
 * @typedef {object} Publication
 * @property {string} rid
 * @property {string} mid
 * @property {string} sfuid
 * @property {RTCPeerConnection} pc
 * @property {Map<string, RoomChannel>} channels data channels the SFU relays, by label
 */

/**
 * @typedef {object} Subscription
 * @property {string} rid
 * @property {string} mid
 * @property {string} sid
 * @property {string} sfuid
 * @property {RTCPeerConnection} pc
 * @property {MediaStream} stream
 * @property {number} answerAt performance.now() when the answer arrived; the
 *   origin for time-to-first-frame measurements.
 */

/**
 * One signaling connection. Events: every server notification by method name
 * (`peer-join`, `peer-leave`, `stream-add`, `stream-remove`, `broadcast`;
 * `publish-failed` {rid, mid, reason} and `subscribe-failed` {rid, mid, sid,
 * reason} when the server removed one of ours whose media transport did not
 * connect, the peer connection being closed here first), plus `close`
 * ({code, reason}) when the socket ends and `keepalive-error`.
 */
/**
 * Browsers decode Opus as mono unless their own description asks for stereo
 * (RFC 7587 `stereo=1`); the SFU forwards stereo as is, so ask for it.
 * @param {string} sdp
 * @returns {string}
 */
function withStereoOpus(sdp) {
  const opus = new Set(
    [...sdp.matchAll(/a=rtpmap:(\d+) opus\//gi)].map((m) => m[1]),
  );
  return sdp.replace(/a=fmtp:(\d+) ([^\r\n]*)/g, (line, pt, params) =>
    opus.has(pt) && !/stereo=/.test(params) ? `${line};stereo=1;sprop-stereo=1` : line,
  );
}

export class Client extends Emitter {
  /**
   * @param {object} [options]
   * @param {number} [options.keepaliveInterval] ms between keepalives per room
   * @param {number} [options.iceGatheringTimeout] ms to wait for full gathering
   * @param {number} [options.requestTimeout] ms before a request is abandoned
   * @param {number} [options.connectTimeout] ms before connect() gives up
   * @param {RTCIceServer[]} [options.iceServers] skip fetching /api/ice-servers
   * @param {RTCIceTransportPolicy} [options.iceTransportPolicy] "relay": media only
   *   through TURN (networks that allow nothing else)
   */
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    /** @type {WebSocket | null} */
    this.ws = null;
    this.uid = null;
    /** @type {RTCIceServer[]} */
    this.iceServers = options.iceServers ?? [];
    this._nextId = 1;
    /** @type {Map<number, {resolve: Function, reject: Function, timer: number}>} */
    this._pending = new Map();
    /** @type {Map<string, number>} rid -> keepalive interval handle */
    this._keepalives = new Map();
    /** @type {Map<string, Publication>} by mid */
    this.publications = new Map();
    /** @type {Map<string, Subscription>} by mid */
    this.subscriptions = new Map();
    /** Subscribes in flight, so a stream-remove racing the answer is not lost. */
    this._subscribing = new Map();
    /** @type {Map<string, object>} rid -> our grants there (see `can`) */
    this.grants = new Map();
    this.token = null;
  }

  /**
   * Whether we hold `grant` in room `rid` (e.g. "canPublish", "roomAdmin").
   * @param {string} rid
   * @param {string} grant
   */
  can(rid, grant) {
    return Boolean((this.grants.get(rid) ?? OPEN_GRANTS)[grant]);
  }

  /**
   * Open the signaling socket. ICE servers are fetched here, once, because
   * every later publish/subscribe needs them and must not wait on HTTP.
   * @param {string} url WebSocket endpoint, e.g. `ws://host:8080/ws`
   * @param {string} uid this peer's user id (the token's subject when a token is given)
   * @param {{token?: string}} [options] an access token from the institution's backend
   * @returns {Promise<void>}
   */
  async connect(url, uid, options = {}) {
    if (this.ws) throw new Error("already connected");
    this.uid = uid;
    this.token = options.token ?? null;
    const wsUrl = new URL(url, location.href);
    wsUrl.searchParams.set("peer", uid);
    if (!this.options.iceServers) {
      this.iceServers = await fetchIceServers(wsUrl, this.token);
    }
    // Browsers cannot set headers on a WebSocket: the token goes in the query.
    if (this.token) wsUrl.searchParams.set("token", this.token);
    const ws = new WebSocket(wsUrl);
    this.ws = ws;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.close();
        reject(new SignalError("timeout", "WebSocket did not open"));
      }, this.options.connectTimeout);
      ws.addEventListener("open", () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
      ws.addEventListener("close", (event) => {
        clearTimeout(timer);
        reject(new SignalError("closed", event.reason || `WebSocket closed (${event.code})`));
      }, { once: true });
    });
    ws.addEventListener("message", (event) => this._onMessage(event.data));
    ws.addEventListener("close", (event) => this._onClose(event));
  }

  /**
   * Send one request and wait for its response.
   * @param {string} method
   * @param {object} [data]
   * @returns {Promise<any>} the response's `data`
   */
  request(method, data = {}) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new SignalError("closed", "not connected"));
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new SignalError("timeout", `no response to ${method}`));
      }, this.options.requestTimeout);
      this._pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ request: true, id, method, data }));
    });
  }

  /**
   * @param {string} rid
   * @param {{mode?: "sfu" | "p2p", capacity?: number}} [options] the first joiner
   *   chooses the room's mode and capacity; later joiners repeat them or omit them
   * @returns {Promise<{pubs: Array<{mid: string, minfo: MediaInfo, rid: string, sfuid: string, uid: string}>, users: Array<{signalid: string, rid: string, uid: string}>, mode?: string, capacity?: number}>}
   *   who and what was already in the room before us
   */
  async join(rid, options = {}) {
    const extra = {};
    if (options.mode) extra.mode = options.mode;
    if (options.capacity) extra.capacity = options.capacity;
    const data = await this.request("join", { rid, ...extra });
    this.grants.set(rid, data.grants ?? OPEN_GRANTS);
    // TURN credentials made for this peer replace the ones fetched at connect.
    if (data.iceServers) this.iceServers = data.iceServers;
    this._startKeepalive(rid);
    return data;
  }

  /**
   * Leave a room. Our own publications and subscriptions in it are closed
   * locally too, since the server drops them with the membership.
   * @param {string} rid
   */
  async leave(rid) {
    this._stopKeepalive(rid);
    this.grants.delete(rid);
    try {
      await this.request("leave", { rid });
    } finally {
      for (const pub of [...this.publications.values()]) {
        if (pub.rid === rid) this._dropPublication(pub.mid);
      }
      for (const sub of [...this.subscriptions.values()]) {
        if (sub.rid === rid) this._dropSubscription(sub.mid);
      }
    }
  }

  /**
   * Publish every track of `stream` on a new sendonly peer connection.
   * `options.dataChannels` opens data channels on it that the SFU relays to the
   * room's other peers holding a channel of the same label; `stream` may then
   * be null for a data-only publication (never announced as a stream).
   * @param {string} rid
   * @param {MediaStream | null} stream
   * @param {{dataChannels?: string[]}} [options]
   * @returns {Promise<Publication>}
   */
  async publish(rid, stream, options = {}) {
    const pc = this._newPeerConnection();
    try {
      const tracks = stream ? stream.getTracks() : [];
      for (const track of tracks) {
        pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
      }
      const channels = new Map();
      for (const label of options.dataChannels ?? []) {
        channels.set(label, new RoomChannel(pc.createDataChannel(label)));
      }
      const minfo = {
        audio: tracks.some((t) => t.kind === "audio"),
        video: tracks.some((t) => t.kind === "video"),
        audiotype: 0,
        videotype: 0,
      };
      if (channels.size) minfo.data = true;
      const offer = await this._completeOffer(pc);
      const data = await this.request("publish", { rid, jsep: offer, minfo });
      await pc.setRemoteDescription(data.jsep);
      const pub = { rid, mid: data.mid, sfuid: data.sfuid, pc, channels };
      this.publications.set(pub.mid, pub);
      return pub;
    } catch (err) {
      pc.close();
      throw err;
    }
  }

  /**
   * @param {string} rid
   * @param {string} mid
   */
  async unpublish(rid, mid) {
    const pub = this.publications.get(mid);
    if (!pub) throw new Error(`not publishing ${mid}`);
    try {
      await this.request("unpublish", { rid, mid, sfuid: pub.sfuid });
    } finally {
      this._dropPublication(mid);
    }
  }

  /**
   * Receive a published stream on a new recvonly peer connection.
   * Transceivers are created only for the kinds `minfo` announces, so the
   * server never has to reject an m-line it cannot feed.
   * @param {string} rid
   * @param {string} mid
   * @param {string} sfuid
   * @param {MediaInfo} [minfo] defaults to audio+video
   * @returns {Promise<Subscription>}
   */
  async subscribe(rid, mid, sfuid, minfo = { audio: true, video: true }) {
    if (this.subscriptions.has(mid) || this._subscribing.has(mid)) {
      throw new Error(`already subscribed to ${mid}`);
    }
    const pc = this._newPeerConnection();
    const attempt = { cancelled: false };
    this._subscribing.set(mid, attempt);
    try {
      if (minfo.audio) pc.addTransceiver("audio", { direction: "recvonly" });
      if (minfo.video) pc.addTransceiver("video", { direction: "recvonly" });
      // Receiver tracks exist as soon as the transceivers do, so the stream
      // is complete before any media flows and can be attached right away.
      const stream = new MediaStream(pc.getReceivers().map((r) => r.track));
      const offer = await this._completeOffer(pc);
      const data = await this.request("subscribe", { rid, mid, jsep: offer, sfuid });
      const answerAt = performance.now();
      await pc.setRemoteDescription(data.jsep);
      if (attempt.cancelled) {
        throw new SignalError("removed", `stream ${mid} was removed while subscribing`);
      }
      const sub = { rid, mid, sid: data.sid, sfuid, pc, stream, answerAt };
      this.subscriptions.set(mid, sub);
      return sub;
    } catch (err) {
      pc.close();
      throw err;
    } finally {
      this._subscribing.delete(mid);
    }
  }

  /**
   * @param {string} rid
   * @param {string} mid
   */
  async unsubscribe(rid, mid) {
    const sub = this.subscriptions.get(mid);
    if (!sub) throw new Error(`not subscribed to ${mid}`);
    try {
      await this.request("unsubscribe", { rid, mid, sid: sub.sid, sfuid: sub.sfuid });
    } finally {
      this._dropSubscription(mid);
    }
  }

  /**
   * Send arbitrary JSON to everyone else in the room.
   * @param {string} rid
   * @param {any} data
   */
  async broadcast(rid, data) {
    await this.request("broadcast", { rid, data });
  }

  /**
   * Start recording a stream on the server (see docs/recording.md).
   * @param {string} rid
   * @param {string} mid
   * @returns {Promise<object>} the file being written
   */
  record(rid, mid) {
    return this.request("record", { rid, mid });
  }

  /**
   * Stop a recording; resolves with the closed file's duration and size.
   * @param {string} rid
   * @param {string} mid
   */
  stopRecord(rid, mid) {
    return this.request("stop-record", { rid, mid });
  }

  // --- the classroom stage (docs/security.md); the server refuses what our
  // grants do not allow, so these need no checks of their own ---

  /**
   * Change what `uid` may do, e.g. `{canPublish: true}` brings a student on
   * stage and `{canPublish: false}` takes them off (their streams end at once).
   * Needs roomAdmin.
   */
  updateGrants(rid, uid, grants) {
    return this.request("update-grants", { rid, uid, grants });
  }

  /** Stop (or with `muted` false resume) forwarding one kind of a stream. */
  mute(rid, mid, kind, muted = true) {
    return this.request("mute", { rid, mid, kind, muted });
  }

  /** Remove `uid` from the room for as long as it lasts. Needs roomAdmin. */
  remove(rid, uid) {
    return this.request("remove", { rid, uid });
  }

  raiseHand(rid) {
    return this.request("raise-hand", { rid });
  }

  /** Lower our hand, or (roomAdmin) someone else's. */
  lowerHand(rid, uid) {
    return this.request("lower-hand", uid ? { rid, uid } : { rid });
  }

  /** Close the socket and every peer connection; the client is then done. */
  close() {
    for (const rid of [...this._keepalives.keys()]) this._stopKeepalive(rid);
    for (const mid of [...this.publications.keys()]) this._dropPublication(mid);
    for (const mid of [...this.subscriptions.keys()]) this._dropSubscription(mid);
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "client closed");
  }

  _newPeerConnection() {
    return new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.options.iceTransportPolicy ?? "all",
    });
  }

  /** @returns {Promise<RTCSessionDescriptionInit>} an offer with all candidates */
  async _completeOffer(pc) {
    const offer = await pc.createOffer();
    await pc.setLocalDescription({ type: "offer", sdp: withStereoOpus(offer.sdp) });
    await iceGatheringDone(pc, this.options.iceGatheringTimeout);
    return { type: "offer", sdp: pc.localDescription.sdp };
  }

  _dropPublication(mid) {
    this.publications.get(mid)?.pc.close();
    this.publications.delete(mid);
  }

  _dropSubscription(mid) {
    this.subscriptions.get(mid)?.pc.close();
    this.subscriptions.delete(mid);
  }

  /**
   * Keepalives keep the room membership from expiring; failures are surfaced
   * as events rather than thrown, since nobody awaits a timer.
   */
  _startKeepalive(rid) {
    this._stopKeepalive(rid);
    const handle = setInterval(() => {
      this.request("keepalive", { rid }).catch((error) => {
        this.emit("keepalive-error", { rid, error });
      });
    }, this.options.keepaliveInterval);
    this._keepalives.set(rid, handle);
  }

  _stopKeepalive(rid) {
    clearInterval(this._keepalives.get(rid));
    this._keepalives.delete(rid);
  }

  _onMessage(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    if (msg.response) {
      const pending = this._pending.get(msg.id);
      if (!pending) return;
      this._pending.delete(msg.id);
      clearTimeout(pending.timer);
      if (msg.ok) pending.resolve(msg.data ?? {});
      else pending.reject(new SignalError(msg.errorCode ?? "error", msg.errorReason ?? ""));
    } else if (msg.notification) {
      const data = msg.data ?? {};
      if (msg.method === "stream-remove") {
        // The server has already torn the subscription down on its side,
        // so only local cleanup is needed; no unsubscribe request. A stream
        // of ours is removed when a room admin ended it.
        this._dropSubscription(data.mid);
        if (data.uid === this.uid) this._dropPublication(data.mid);
        const attempt = this._subscribing.get(data.mid);
        if (attempt) attempt.cancelled = true;
      } else if (msg.method === "publish-failed") {
        // Our transport never connected (or failed): the server removed the stream.
        if (this.publications.has(data.mid)) this._dropPublication(data.mid);
      } else if (msg.method === "subscribe-failed") {
        if (this.subscriptions.get(data.mid)?.sid === data.sid) this._dropSubscription(data.mid);
      }
      if (msg.method === "grants-updated" && data.uid === this.uid) {
        this.grants.set(data.rid, data.grants);
      }
      if (msg.method === "subscription-ended") this._dropSubscription(data.mid);
      this.emit(msg.method, data);
    }
  }

  _onClose(event) {
    for (const [id, pending] of this._pending) {
      clearTimeout(pending.timer);
      pending.reject(new SignalError("closed", "connection closed"));
      this._pending.delete(id);
    }
    for (const rid of [...this._keepalives.keys()]) this._stopKeepalive(rid);
    this.emit("close", { code: event.code, reason: event.reason });
  }
}

/**
 * A data channel of a publication, relayed by the SFU (wire format in
 * docs/p2p.md). Events: `open`, `close`, `message` ({from, data, to?}; `data`
 * is a JSON value, or a Uint8Array for binary messages), `dropped` (n: messages
 * the relay skipped while we were too slow), `error` ({code, reason}: the relay
 * refused one of our messages).
 */
export class RoomChannel extends Emitter {
  /** @param {RTCDataChannel} channel */
  constructor(channel) {
    super();
    this.channel = channel;
    channel.binaryType = "arraybuffer";
    channel.addEventListener("open", () => this.emit("open", {}));
    channel.addEventListener("close", () => this.emit("close", {}));
    channel.addEventListener("message", (event) => this._onMessage(event.data));
  }

  get label() {
    return this.channel.label;
  }

  get isOpen() {
    return this.channel.readyState === "open";
  }

  /**
   * Send a JSON value to everyone else with this channel, or only to `to`.
   * @param {any} data
   * @param {string} [to]
   */
  send(data, to) {
    this.channel.send(JSON.stringify(to ? { data, to } : { data }));
  }

  /**
   * @param {Uint8Array} payload
   * @param {string} [to]
   */
  sendBytes(payload, to = "") {
    const name = new TextEncoder().encode(to);
    const frame = new Uint8Array(2 + name.length + payload.length);
    new DataView(frame.buffer).setUint16(0, name.length);
    frame.set(name, 2);
    frame.set(payload, 2 + name.length);
    this.channel.send(frame);
  }

  _onMessage(raw) {
    if (raw instanceof ArrayBuffer) {
      const view = new DataView(raw);
      const length = view.getUint16(0);
      const from = new TextDecoder().decode(new Uint8Array(raw, 2, length));
      this.emit("message", { from, data: new Uint8Array(raw, 2 + length) });
      return;
    }
    const msg = JSON.parse(raw);
    if (msg.error) this.emit("error", msg.error);
    else if (msg.dropped !== undefined) this.emit("dropped", msg.dropped);
    else this.emit("message", msg);
  }
}

/**
 * @typedef {object} PeerLink
 * @property {string} uid the remote peer
 * @property {RTCPeerConnection} pc
 * @property {boolean} polite
 * @property {MediaStream} stream what the remote peer sends us
 * @property {RTCDataChannel | null} channel
 */

/**
 * A p2p (mesh) room: one direct RTCPeerConnection per other peer, negotiated
 * through the server's offer/answer/candidate relay; the server carries no
 * media. Peers already in the room offer to each newcomer (seed 003's
 * new-peer), so a first connection never glares; later renegotiations use
 * "perfect negotiation" (the peer with the greater uid is polite).
 * Events: `link` (PeerLink, created), `channel` ({uid, channel}: its data
 * channel, ours or theirs), `track` ({uid, track, stream}), `message`
 * ({from, data}), `link-state` ({uid, state}), `link-closed` ({uid}).
 */
export class Mesh extends Emitter {
  /**
   * @param {Client} client a connected client
   * @param {string} rid
   * @param {{stream?: MediaStream | null, dataChannel?: string}} [options]
   */
  constructor(client, rid, options = {}) {
    super();
    this.client = client;
    this.rid = rid;
    this.stream = options.stream ?? null;
    this.label = options.dataChannel ?? "data";
    /** @type {Map<string, PeerLink>} */
    this.links = new Map();
    this._off = [
      client.on("offer", (m) => this._mine(m) && this._onDescription(m.from, m.jsep)),
      client.on("answer", (m) => this._mine(m) && this._onDescription(m.from, m.jsep)),
      client.on("candidate", (m) => this._mine(m) && this._onCandidate(m.from, m.candidate)),
      client.on("peer-join", (m) => m.rid === rid && this._connect(m.uid)),
      client.on("peer-leave", (m) => m.rid === rid && this._close(m.uid)),
    ];
  }

  /**
   * Join the room as a mesh room; peers already there will offer to us.
   * @param {{capacity?: number}} [options]
   */
  async join(options = {}) {
    return this.client.join(this.rid, { mode: "p2p", capacity: options.capacity });
  }

  /**
   * Send a JSON value to every connected peer (or only `to`) directly.
   * @param {any} data
   * @param {string} [to]
   * @returns {number} how many peers it was sent to
   */
  send(data, to) {
    let sent = 0;
    for (const link of this.links.values()) {
      if ((!to || link.uid === to) && link.channel?.readyState === "open") {
        link.channel.send(JSON.stringify(data));
        sent += 1;
      }
    }
    return sent;
  }

  /** Close every link (the room membership is the client's). */
  close() {
    for (const off of this._off) off();
    for (const uid of [...this.links.keys()]) this._close(uid);
  }

  _mine(message) {
    return message.rid === this.rid && typeof message.from === "string";
  }

  _relay(method, to, body) {
    this.client.request(method, { rid: this.rid, to, ...body }).catch((err) => {
      console.warn(`p2p ${method} to ${to} failed:`, err.message);
    });
  }

  /** @returns {PeerLink} */
  _link(uid) {
    const existing = this.links.get(uid);
    if (existing) return existing;
    const pc = this.client._newPeerConnection();
    const link = {
      uid,
      pc,
      polite: this.client.uid > uid,
      stream: new MediaStream(),
      channel: null,
      makingOffer: false,
      ignoreOffer: false,
      pendingCandidates: [],
    };
    this.links.set(uid, link);
    pc.addEventListener("icecandidate", ({ candidate }) => {
      this._relay("candidate", uid, { candidate: candidate ? candidate.toJSON() : null });
    });
    pc.addEventListener("negotiationneeded", () => this._negotiate(link));
    pc.addEventListener("track", ({ track }) => {
      link.stream.addTrack(track);
      this.emit("track", { uid, track, stream: link.stream });
    });
    pc.addEventListener("datachannel", ({ channel }) => this._adopt(link, channel));
    pc.addEventListener("connectionstatechange", () => {
      this.emit("link-state", { uid, state: pc.connectionState });
      if (pc.connectionState === "failed") pc.restartIce();
    });
    this.emit("link", link);
    return link;
  }

  _adopt(link, channel) {
    link.channel = channel;
    this.emit("channel", { uid: link.uid, channel });
    channel.addEventListener("message", (event) => {
      let data = event.data;
      try {
        data = JSON.parse(event.data);
      } catch {
        // a peer that sends plain text (e.g. `aiosfu peer`) is shown as is
      }
      this.emit("message", { from: link.uid, data });
    });
  }

  _addLocalMedia(link) {
    const tracks = this.stream ? this.stream.getTracks() : [];
    for (const track of tracks) link.pc.addTrack(track, this.stream);
    return new Set(tracks.map((t) => t.kind));
  }

  /** We were here first: offer to the newcomer (media, receive slots, data). */
  _connect(uid) {
    if (uid === this.client.uid || this.links.has(uid)) return;
    const link = this._link(uid);
    const sent = this._addLocalMedia(link);
    for (const kind of ["audio", "video"]) {
      if (!sent.has(kind)) link.pc.addTransceiver(kind, { direction: "recvonly" });
    }
    this._adopt(link, link.pc.createDataChannel(this.label));
    // negotiationneeded now fires and sends the offer.
  }

  async _negotiate(link) {
    try {
      link.makingOffer = true;
      await link.pc.setLocalDescription();
      const { type, sdp } = link.pc.localDescription;
      this._relay("offer", link.uid, { jsep: { type, sdp } });
    } catch (err) {
      console.warn(`p2p offer to ${link.uid} failed:`, err);
    } finally {
      link.makingOffer = false;
    }
  }

  async _onDescription(uid, description) {
    const isOffer = description.type === "offer";
    if (!isOffer && !this.links.has(uid)) return;
    const fresh = !this.links.has(uid);
    const link = this._link(uid);
    const pc = link.pc;
    try {
      const collision = isOffer && (link.makingOffer || pc.signalingState !== "stable");
      link.ignoreOffer = !link.polite && collision;
      if (link.ignoreOffer) return;
      await pc.setRemoteDescription(description);
      if (isOffer) {
        // A newcomer answers with its tracks in the slots the offer made.
        if (fresh) this._addLocalMedia(link);
        await pc.setLocalDescription();
        const { type, sdp } = pc.localDescription;
        this._relay("answer", uid, { jsep: { type, sdp } });
      }
      for (const candidate of link.pendingCandidates.splice(0)) {
        await pc.addIceCandidate(candidate);
      }
    } catch (err) {
      console.warn(`p2p ${description.type} from ${uid} failed:`, err);
    }
  }

  async _onCandidate(uid, candidate) {
    const link = this.links.get(uid);
    if (!link || !candidate) return;
    if (!link.pc.remoteDescription) {
      link.pendingCandidates.push(candidate);
      return;
    }
    try {
      await link.pc.addIceCandidate(candidate);
    } catch (err) {
      if (!link.ignoreOffer) console.warn(`p2p candidate from ${uid} failed:`, err);
    }
  }

  _close(uid) {
    const link = this.links.get(uid);
    if (!link) return;
    this.links.delete(uid);
    link.pc.close();
    this.emit("link-closed", { uid });
  }
}

/**
 * @param {URL} wsUrl the signaling URL; the API lives on the same origin
 * @returns {Promise<RTCIceServer[]>}
 */
async function fetchIceServers(wsUrl, token) {
  const url = new URL("/api/ice-servers", wsUrl);
  url.protocol = wsUrl.protocol === "wss:" ? "https:" : "http:";
  url.search = "";
  url.searchParams.set("peer", wsUrl.searchParams.get("peer") ?? "");
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(url, { headers });
  if (!response.ok) {
    throw new SignalError("ice-servers", `GET ${url.pathname} failed: ${response.status}`);
  }
  const body = await response.json();
  return body.iceServers ?? [];
}
