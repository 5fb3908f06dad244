/**
 * Demo classroom page: join a room, publish camera+mic, watch everyone else.
 * Query parameters: room, name, autojoin=1, publish=0 (see docs/browser.md),
 * mode=p2p and capacity=N (a mesh room, docs/p2p.md), token=JWT (a server
 * with API keys: the name is the token's, and the page shows the classroom
 * controls the token's grants allow, docs/security.md), relay=1 (media only
 * through TURN).
 */
import { Client, Mesh, defaultUrl } from "/static/aiosfu.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

/**
 * Page state exposed for automation. `subscriptions` holds plain data only
 * (no peer connections) so it can be serialized out of the page.
 */
const demo = {
  state: "idle",
  error: null,
  localMid: null,
  /** @type {Array<{mid: string, sid: string, uid: string, sfuid: string, answerAt: number, firstFrameAt: number | null}>} */
  subscriptions: [],
  videoStats,
  /** "sfu" or "p2p" once joined; errorCode is the server's code when a request failed. */
  mode: null,
  errorCode: null,
  /** Chat lines shown, and whether our chat data channel is open (sfu) / any link is (p2p). */
  /** @type {Array<{from: string, text: string}>} */
  chat: [],
  chatReady: false,
  /** p2p: one entry per direct connection. */
  /** @type {Array<{uid: string, state: string}>} */
  peers: [],
  peerStats,
  publicationStats,
  /** Our grants in the room (null in open mode before joining), raised hands, who is on stage. */
  grants: null,
  /** @type {string[]} */
  hands: [],
  /** @type {string[]} */
  onStage: [],
};
window.aiosfuDemo = demo;

/** @type {Client | null} */
let client = null;
let room = null;
let self = null;
/** @type {MediaStream | null} */
let localStream = null;
/** @type {Mesh | null} p2p rooms: the direct connections */
let mesh = null;
/** @type {import("/static/aiosfu.js").RoomChannel | null} sfu rooms: chat through the SFU */
let chatChannel = null;
/** Tiles by mid; the local preview uses the key "local". */
const tiles = new Map();
/** Participants by uid. */
const participants = new Map();
/** The stage as this page knows it: raised hands, and uids brought on stage. */
const hands = new Set();
const onStage = new Set();
const token = params.get("token");
/** Whether the user asked to send camera and microphone (sent once grants allow). */
let wantMedia = false;

const form = $("join-form");
const roomInput = $("room");
const nameInput = $("name");
const publishInput = $("publish");

const modeInput = $("mode");
const wantedMode = params.get("mode") === "p2p" ? "p2p" : "sfu";
const wantedCapacity = Number(params.get("capacity")) || undefined;
modeInput.value = wantedMode;

roomInput.value = params.get("room") || "lobby";
nameInput.value = tokenSubject(token) || params.get("name") || `guest-${Math.random().toString(36).slice(2, 6)}`;
if (token) nameInput.readOnly = true;
publishInput.checked = params.get("publish") !== "0";

form.addEventListener("submit", (event) => {
  event.preventDefault();
  join(roomInput.value.trim(), nameInput.value.trim(), publishInput.checked);
});
$("leave").addEventListener("click", () => leave());
$("hand").addEventListener("click", () => toggleHand());
$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sendChat();
});
$("unmute").addEventListener("click", () => {
  for (const tile of tiles.values()) tile.audio.play().catch(() => {});
  $("unmute").hidden = true;
});
window.addEventListener("pagehide", () => client?.close());

if (params.get("autojoin") === "1") {
  join(roomInput.value.trim(), nameInput.value.trim(), publishInput.checked);
}

/**
 * @param {string} rid
 * @param {string} uid
 * @param {boolean} withMedia
 */
async function join(rid, uid, withMedia) {
  if (!rid || !uid || client) return;
  setControls("joining");
  demo.error = null;
  showStatus(`Joining ${rid}…`);
  // relay=1: media only through the TURN servers the server hands out.
  const c = new Client(params.get("relay") === "1" ? { iceTransportPolicy: "relay" } : {});
  client = c;
  self = uid;
  c.on("peer-join", ({ uid: who }) => addParticipant(who));
  c.on("peer-leave", ({ uid: who }) => removeParticipant(who));
  c.on("stream-add", (pub) => subscribeTo(pub));
  c.on("stream-remove", ({ mid, uid: who }) => {
    if (who === self) stopPublishing();
    else dropSubscription(mid);
  });
  c.on("grants-updated", (update) => onGrants(c, update));
  c.on("hand-raised", ({ uid: who }) => setHand(who, true));
  c.on("hand-lowered", ({ uid: who }) => setHand(who, false));
  c.on("stream-muted", ({ mid, kind, muted }) => showMuted(mid, kind, muted));
  c.on("peer-removed", ({ uid: who, by }) => {
    if (who === self) fail(new Error(`${by} removed you from the room`));
    else removeParticipant(who);
  });
  c.on("publish-failed", ({ reason }) => showStatus(`camera not published: ${reason}`, "error"));
  c.on("subscribe-failed", ({ mid, reason }) => {
    dropSubscription(mid);
    showStatus(`video of ${mid} lost: ${reason}`, "error");
  });
  c.on("broadcast", ({ uid: who, data }) => {
    if (who !== self && data?.type === "chat") appendChat(who, String(data.text ?? ""));
  });
  const mode = modeInput.value === "p2p" ? "p2p" : "sfu";
  c.on("close", () => {
    if (client === c) fail(new Error("connection to the server was lost"));
  });
  try {
    // Ask for the camera before joining so a refusal leaves no trace in the room.
    // With a token the grants decide first (a student joins without a camera).
    wantMedia = withMedia;
    if (withMedia && !token) {
      localStream = await navigator.mediaDevices.getUserMedia({
        audio: true,
        video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
      });
      const tile = addTile("local", uid, { local: true });
      tile.video.srcObject = localStream;
    }
    await c.connect(defaultUrl(), uid, { token });
    if (mode === "p2p") mesh = startMesh(c, rid);
    const joined = await c.join(rid, { mode: mode === "p2p" ? "p2p" : undefined, capacity: wantedCapacity });
    const { pubs = [], users = [] } = joined;
    room = rid;
    demo.grants = joined.grants ?? null;
    for (const who of joined.hands ?? []) hands.add(who);
    for (const { mid, kinds } of joined.muted ?? []) {
      for (const kind of kinds) showMuted(mid, kind, true);
    }
    demo.mode = joined.mode ?? "sfu";
    // The room was already a mesh room: follow it.
    if (demo.mode === "p2p" && !mesh) mesh = startMesh(c, rid);
    const extra = mode === "p2p" ? `&mode=p2p${wantedCapacity ? `&capacity=${wantedCapacity}` : ""}` : "";
    history.replaceState(null, "", `?room=${encodeURIComponent(rid)}&name=${encodeURIComponent(uid)}${extra}`);
    addParticipant(uid);
    for (const user of users) addParticipant(user.uid);
    if (demo.mode === "sfu") {
      for (const pub of pubs) subscribeTo(pub);
      if (localStream) {
        const pub = await c.publish(rid, localStream);
        demo.localMid = pub.mid;
        tiles.get("local").el.dataset.mid = pub.mid;
      } else if (wantMedia && c.can(rid, "canPublish")) {
        await startPublishing(c, rid);
      }
      if (c.can(rid, "canPublishData")) await openChat(c, rid);
    }
    demo.state = "joined";
    setControls("joined");
    showStatus(`In room ${rid} as ${uid}`, "ok");
  } catch (err) {
    fail(err);
  }
}

async function leave() {
  const c = client;
  if (!c) return;
  client = null;
  setControls("leaving");
  try {
    if (room) await c.leave(room);
  } catch (err) {
    console.warn("leave failed:", err);
  } finally {
    c.close();
    reset();
    showStatus("You left the room");
  }
}

/** Our camera and microphone into the room (on joining, or when brought on stage). */
async function startPublishing(c, rid) {
  if (localStream) return;
  localStream = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
  });
  const tile = addTile("local", self, { local: true });
  tile.video.srcObject = localStream;
  const pub = await c.publish(rid, localStream);
  demo.localMid = pub.mid;
  tile.el.dataset.mid = pub.mid;
}

/** The server ended our publication (we were taken off stage). */
function stopPublishing() {
  removeTile("local");
  localStream?.getTracks().forEach((track) => track.stop());
  localStream = null;
  demo.localMid = null;
}

async function onGrants(c, { uid: who, grants }) {
  if (grants.canPublish) onStage.add(who);
  else onStage.delete(who);
  demo.onStage = [...onStage];
  if (who === self) {
    demo.grants = grants;
    if (grants.canPublish && wantMedia && !localStream && room) {
      try {
        await startPublishing(c, room);
        showStatus("You are on stage", "ok");
      } catch (err) {
        showStatus(`could not publish: ${err.message}`, "error");
      }
    } else if (!grants.canPublish) {
      stopPublishing();
    }
  }
  renderParticipants();
}

function setHand(who, raised) {
  if (raised) hands.add(who);
  else hands.delete(who);
  demo.hands = [...hands];
  renderParticipants();
}

async function toggleHand() {
  if (!client || !room) return;
  try {
    if (hands.has(self)) await client.lowerHand(room);
    else await client.raiseHand(room);
  } catch (err) {
    showStatus(`${err.message}`, "error");
  }
}

function showMuted(mid, kind, muted) {
  const tile = [...tiles.values()].find((t) => t.el.dataset.mid === mid);
  tile?.el.classList.toggle(`muted-${kind}`, muted);
  renderParticipants();
}

/** A teacher's action on someone else; the server checks the grant again. */
async function act(what, ...args) {
  try {
    await client?.[what](room, ...args);
  } catch (err) {
    showStatus(`${what} failed: ${err.message}`, "error");
  }
}

/**
 * @param {string | null} jwt
 * @returns {string} the uid a token names (read, not verified: the server does that)
 */
function tokenSubject(jwt) {
  try {
    const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return String(JSON.parse(atob(payload)).sub ?? "");
  } catch {
    return "";
  }
}

/** Tear everything down after an unrecoverable error and show why. */
function fail(err) {
  const c = client;
  client = null;
  c?.close();
  reset();
  demo.state = "error";
  demo.error = err?.message ?? String(err);
  demo.errorCode = err?.code ?? null;
  showStatus(demo.error, "error");
}

/**
 * A p2p room: every other peer gets a direct connection carrying our camera
 * and a chat channel; the server only relays the negotiation.
 * @param {Client} c
 * @param {string} rid
 */
function startMesh(c, rid) {
  const m = new Mesh(c, rid, { stream: localStream, dataChannel: "chat" });
  const peer = (uid) => {
    let entry = demo.peers.find((p) => p.uid === uid);
    if (!entry) {
      entry = { uid, state: "new" };
      demo.peers.push(entry);
    }
    return entry;
  };
  m.on("link", (link) => {
    peer(link.uid);
    addParticipant(link.uid);
  });
  m.on("channel", ({ channel }) => watchMeshChat(channel));
  m.on("track", ({ uid, stream }) => {
    const key = `p2p:${uid}`;
    const tile = tiles.get(key) ?? addTile(key, uid);
    tile.video.srcObject = new MediaStream(stream.getVideoTracks());
    const audio = stream.getAudioTracks();
    if (audio.length) {
      tile.audio.srcObject = new MediaStream(audio);
      tile.audio.play().catch((err) => {
        if (err.name === "NotAllowedError") $("unmute").hidden = false;
      });
    }
  });
  m.on("link-state", ({ uid, state }) => {
    peer(uid).state = state;
  });
  m.on("link-closed", ({ uid }) => {
    removeTile(`p2p:${uid}`);
    const index = demo.peers.findIndex((p) => p.uid === uid);
    if (index >= 0) demo.peers.splice(index, 1);
    demo.chatReady = [...m.links.values()].some((l) => l.channel?.readyState === "open");
  });
  m.on("message", ({ from, data }) => {
    if (data?.type === "chat") appendChat(from, String(data.text ?? ""));
    else if (typeof data === "string") appendChat(from, data);
  });
  return m;
}

function watchMeshChat(channel) {
  const update = () => {
    demo.chatReady = [...(mesh?.links.values() ?? [])].some((l) => l.channel?.readyState === "open");
  };
  channel.addEventListener("open", update);
  channel.addEventListener("close", update);
  update();
}

/**
 * Chat in an sfu room goes over a data channel the SFU relays (a data-only
 * publication, never shown as a stream); the broadcast request stays the
 * fallback while it is not open.
 * @param {Client} c
 * @param {string} rid
 */
async function openChat(c, rid) {
  try {
    const pub = await c.publish(rid, null, { dataChannels: ["chat"] });
    const channel = pub.channels.get("chat");
    chatChannel = channel;
    channel.on("open", () => {
      demo.chatReady = true;
    });
    channel.on("close", () => {
      demo.chatReady = false;
    });
    channel.on("message", ({ from, data }) => {
      if (data?.type === "chat") appendChat(from, String(data.text ?? ""));
    });
    channel.on("dropped", (count) => showStatus(`${count} chat messages were lost`, "error"));
    channel.on("error", ({ reason }) => showStatus(`message not sent: ${reason}`, "error"));
    if (channel.isOpen) demo.chatReady = true;
  } catch (err) {
    console.warn("chat channel unavailable, using broadcast:", err);
  }
}

/**
 * Per-peer decoder counters of a p2p room, for automation.
 * @returns {Promise<Array<{uid: string, state: string, framesDecoded: number, frameWidth: number, frameHeight: number}>>}
 */
async function peerStats() {
  const links = [...(mesh?.links.values() ?? [])];
  return Promise.all(links.map(async (link) => {
    const result = { uid: link.uid, state: link.pc.connectionState, framesDecoded: 0, frameWidth: 0, frameHeight: 0 };
    const report = await link.pc.getStats();
    report.forEach((stat) => {
      if (stat.type === "inbound-rtp" && stat.kind === "video") {
        result.framesDecoded = stat.framesDecoded ?? 0;
        result.frameWidth = stat.frameWidth ?? 0;
        result.frameHeight = stat.frameHeight ?? 0;
      }
    });
    return result;
  }));
}

/**
 * Our publication's transport, for automation: which kind of local candidate
 * carries it (host, srflx, relay) and how much it sent.
 * @returns {Promise<{candidateType: string | null, bytesSent: number}>}
 */
async function publicationStats() {
  const pub = client?.publications.get(demo.localMid);
  const result = { candidateType: null, bytesSent: 0 };
  if (!pub) return result;
  const report = await pub.pc.getStats();
  report.forEach((stat) => {
    if (stat.type === "transport" && stat.selectedCandidatePairId) {
      const pair = report.get(stat.selectedCandidatePairId);
      result.candidateType = report.get(pair?.localCandidateId)?.candidateType ?? null;
    }
    if (stat.type === "outbound-rtp") result.bytesSent += stat.bytesSent ?? 0;
  });
  return result;
}

/** Return the page to its pre-join state, keeping `state`/`error` to the caller. */
function reset() {
  mesh?.close();
  mesh = null;
  chatChannel = null;
  demo.mode = null;
  demo.peers.length = 0;
  demo.chatReady = false;
  for (const key of [...tiles.keys()]) removeTile(key);
  localStream?.getTracks().forEach((track) => track.stop());
  localStream = null;
  participants.clear();
  renderParticipants();
  demo.subscriptions.length = 0;
  demo.localMid = null;
  demo.grants = null;
  hands.clear();
  onStage.clear();
  demo.hands = [];
  demo.onStage = [];
  demo.state = "idle";
  room = null;
  $("unmute").hidden = true;
  setControls("idle");
}

/**
 * @param {{mid: string, sfuid: string, uid: string, minfo?: object}} pub
 */
async function subscribeTo(pub) {
  const c = client;
  if (!c || pub.uid === self || tiles.has(pub.mid)) return;
  addParticipant(pub.uid);
  const tile = addTile(pub.mid, pub.uid, { pending: true });
  const entry = { mid: pub.mid, sid: null, uid: pub.uid, sfuid: pub.sfuid, answerAt: null, firstFrameAt: null };
  watchFirstFrame(tile.video, entry);
  try {
    const sub = await c.subscribe(pub.rid ?? room, pub.mid, pub.sfuid, pub.minfo);
    // Leaving closed this client while the answer was in flight.
    if (client !== c) return;
    entry.sid = sub.sid;
    entry.answerAt = sub.answerAt;
    demo.subscriptions.push(entry);
    tile.video.srcObject = new MediaStream(sub.stream.getVideoTracks());
    const audioTracks = sub.stream.getAudioTracks();
    if (audioTracks.length) {
      tile.audio.srcObject = new MediaStream(audioTracks);
      tile.audio.play().catch((err) => {
        // Autoplay policy blocks sound until the user interacts with the page.
        if (err.name === "NotAllowedError") $("unmute").hidden = false;
      });
    }
    tile.el.classList.remove("pending");
  } catch (err) {
    if (err.code === "removed" || client !== c) return;
    removeTile(pub.mid);
    demo.error = `subscribe ${pub.mid} failed: ${err.message}`;
    showStatus(demo.error, "error");
  }
}

function dropSubscription(mid) {
  removeTile(mid);
  const index = demo.subscriptions.findIndex((entry) => entry.mid === mid);
  if (index >= 0) demo.subscriptions.splice(index, 1);
}

/**
 * Record when the first frame was rendered. requestVideoFrameCallback fires
 * on presentation; `loadeddata` fires once the first frame is decoded and is
 * the fallback where the callback is missing or throttled. The earliest wins.
 */
function watchFirstFrame(video, entry) {
  const mark = () => {
    if (entry.firstFrameAt === null) entry.firstFrameAt = performance.now();
  };
  if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(mark);
  video.addEventListener("loadeddata", mark, { once: true });
}

/**
 * Per-subscription decoder counters from WebRTC stats, for automation.
 * @returns {Promise<Array<{mid: string, sid: string, framesDecoded: number, frameWidth: number, frameHeight: number, answerAt: number, firstFrameAt: number | null}>>}
 */
async function videoStats() {
  const c = client;
  return Promise.all(demo.subscriptions.map(async (entry) => {
    const result = {
      mid: entry.mid,
      sid: entry.sid,
      framesDecoded: 0,
      frameWidth: 0,
      frameHeight: 0,
      answerAt: entry.answerAt,
      firstFrameAt: entry.firstFrameAt,
    };
    const sub = c?.subscriptions.get(entry.mid);
    if (!sub) return result;
    const report = await sub.pc.getStats();
    report.forEach((stat) => {
      if (stat.type === "inbound-rtp" && stat.kind === "video") {
        result.framesDecoded = stat.framesDecoded ?? 0;
        result.frameWidth = stat.frameWidth ?? 0;
        result.frameHeight = stat.frameHeight ?? 0;
      }
    });
    return result;
  }));
}

function addTile(key, uid, { local = false, pending = false } = {}) {
  const el = $("tile-template").content.firstElementChild.cloneNode(true);
  const tile = { el, video: el.querySelector("video"), audio: el.querySelector("audio") };
  el.dataset.uid = uid;
  if (key !== "local") el.dataset.mid = key;
  el.classList.toggle("local", local);
  el.classList.toggle("pending", pending);
  el.querySelector(".tile-name").textContent = uid;
  el.querySelector(".tile-tag").textContent = local ? "You" : "";
  if (local) tile.audio.remove();
  $("stage").append(el);
  tiles.set(key, tile);
  tilesChanged();
  return tile;
}

function removeTile(key) {
  const tile = tiles.get(key);
  if (!tile) return;
  tile.video.srcObject = null;
  tile.audio.srcObject = null;
  tile.el.remove();
  tiles.delete(key);
  tilesChanged();
}

/** The empty-stage hint and the participants' live dots follow the tiles. */
function tilesChanged() {
  $("empty").hidden = tiles.size > 0;
  renderParticipants();
}

function addParticipant(uid) {
  if (!uid || participants.has(uid)) return;
  participants.set(uid, { uid });
  renderParticipants();
}

function removeParticipant(uid) {
  participants.delete(uid);
  renderParticipants();
}

function renderParticipants() {
  const list = $("participants");
  list.replaceChildren();
  const live = new Set([...tiles.values()].map((tile) => tile.el.dataset.uid));
  const ordered = [...participants.keys()].sort((a, b) => (a === self ? -1 : b === self ? 1 : a.localeCompare(b)));
  for (const uid of ordered) {
    const item = document.createElement("li");
    item.dataset.uid = uid;
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    avatar.textContent = uid.slice(0, 1).toUpperCase();
    const name = document.createElement("span");
    name.className = "participant-name";
    name.textContent = uid === self ? `${uid} (you)` : uid;
    item.append(avatar, name);
    if (hands.has(uid)) {
      const hand = document.createElement("span");
      hand.className = "hand";
      hand.title = "Hand raised";
      hand.textContent = "✋";
      item.append(hand);
    }
    if (live.has(uid)) {
      const dot = document.createElement("span");
      dot.className = "live";
      dot.title = "Publishing";
      item.append(dot);
    }
    if (uid !== self && room && client?.can(room, "roomAdmin")) item.append(...adminControls(uid));
    list.append(item);
  }
  $("participant-count").textContent = String(participants.size);
  // A student's hand: shown to whoever cannot publish yet (a teacher needs none).
  const hand = $("hand");
  hand.hidden = !(room && client && !client.can(room, "canPublish") && !client.can(room, "roomAdmin"));
  hand.textContent = hands.has(self) ? "Lower hand" : "Raise hand";
}

/** Only for a room admin: stage, mute and remove buttons on one participant. */
function adminControls(uid) {
  const button = (label, className, onClick) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `btn btn-small ${className}`;
    b.textContent = label;
    b.dataset.uid = uid;
    b.addEventListener("click", onClick);
    return b;
  };
  const staged = onStage.has(uid);
  const controls = [
    button(staged ? "Off stage" : "On stage", "stage-toggle", () =>
      act("updateGrants", uid, { canPublish: !staged })),
  ];
  const tile = [...tiles.entries()].find(([key, t]) => key !== "local" && t.el.dataset.uid === uid);
  if (tile) {
    const muted = tile[1].el.classList.contains("muted-audio");
    controls.push(button(muted ? "Unmute" : "Mute", "mute", () =>
      act("mute", tile[0], "audio", !muted).then(() => renderParticipants())));
  }
  controls.push(button("Remove", "remove", () => act("remove", uid)));
  return controls;
}

async function sendChat() {
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text || !client || !room) return;
  input.value = "";
  appendChat(self, text);
  const message = { type: "chat", text };
  try {
    if (mesh) {
      if (!mesh.send(message)) showStatus("nobody is connected to hear that", "error");
    } else if (chatChannel?.isOpen) {
      chatChannel.send(message);
    } else {
      await client.broadcast(room, message);
    }
  } catch (err) {
    showStatus(`message not sent: ${err.message}`, "error");
  }
}

function appendChat(uid, text) {
  demo.chat.push({ from: uid, text });
  const item = document.createElement("li");
  const who = document.createElement("strong");
  who.textContent = uid;
  item.append(who, document.createTextNode(` ${text}`));
  const log = $("chat-log");
  log.append(item);
  log.scrollTop = log.scrollHeight;
}

/** @param {"idle" | "joining" | "joined" | "leaving"} phase */
function setControls(phase) {
  const inRoom = phase !== "idle";
  roomInput.disabled = inRoom;
  nameInput.disabled = inRoom;
  modeInput.disabled = inRoom;
  publishInput.disabled = inRoom;
  $("join").hidden = phase === "joined" || phase === "leaving";
  $("join").disabled = phase === "joining";
  $("leave").hidden = !(phase === "joined" || phase === "leaving");
  $("leave").disabled = phase === "leaving";
  $("chat-input").disabled = phase !== "joined";
  $("chat-form").querySelector("button").disabled = phase !== "joined";
}

/**
 * @param {string} text
 * @param {"info" | "ok" | "error"} [kind]
 */
function showStatus(text, kind = "info") {
  $("status").hidden = false;
  $("status").dataset.kind = kind;
  $("status-text").textContent = text;
}
