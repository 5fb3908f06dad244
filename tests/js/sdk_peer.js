// A participant built on the JS SDK (/static/aiosfu.js), injected into a page of the
// server by the interop tests; the same script runs in Chromium and in Firefox.
// Everything it returns is plain data, so it crosses playwright's and puppeteer's
// evaluate() alike.
(() => {
  const state = { client: null, rid: null, notifications: [], pubs: [], levels: new Map() };

  /** Offer only `mime` for video (e.g. "video/H264"), as a browser app choosing a codec would. */
  function preferVideoCodec(pc, mime, profile) {
    for (const t of pc.getTransceivers()) {
      const kind = t.sender.track?.kind ?? t.receiver.track?.kind;
      if (kind !== "video") continue;
      const caps = RTCRtpReceiver.getCapabilities("video").codecs;
      const wanted = caps.filter(
        (c) =>
          c.mimeType.toLowerCase() === mime.toLowerCase() &&
          (!profile || (c.sdpFmtpLine ?? "").includes(`profile-level-id=${profile}`)) &&
          (c.sdpFmtpLine ?? "").includes("packetization-mode=1") === (mime.toLowerCase() === "video/h264"),
      );
      const rtx = caps.filter((c) => c.mimeType.toLowerCase() === "video/rtx");
      if (!wanted.length) throw new Error(`this browser cannot ${mime} ${profile ?? ""}`);
      t.setCodecPreferences([...wanted, ...rtx]);
    }
  }

  async function withCodec(options, action) {
    if (!options.videoCodec) return action();
    // The SDK creates its transceivers inside publish/subscribe: choose the codec there.
    const original = RTCPeerConnection.prototype.createOffer;
    RTCPeerConnection.prototype.createOffer = function (...args) {
      preferVideoCodec(this, options.videoCodec, options.profile);
      return original.apply(this, args);
    };
    try {
      return await action();
    } finally {
      RTCPeerConnection.prototype.createOffer = original;
    }
  }

  /**
   * Play the subscription's audio into an analyser: browsers decode received audio only
   * for a consumer, and the analyser's level shows that what was decoded is sound.
   * (Headless Firefox keeps Web Audio suspended; its stats' totalAudioEnergy tells there.)
   */
  function listen(sub) {
    if (!sub.stream.getAudioTracks().length) return;
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    context.createMediaStreamSource(sub.stream).connect(analyser);
    // Firefox plays a MediaStream into Web Audio only while a media element also plays it.
    const element = new Audio();
    element.muted = true;
    element.srcObject = sub.stream;
    element.play().catch(() => {});
    context.resume().catch(() => {});
    // The loudest sample heard so far: Chromium's fake microphone beeps once a second.
    const samples = new Float32Array(analyser.fftSize);
    let peak = 0;
    setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      for (const v of samples) peak = Math.max(peak, Math.abs(v));
    }, 20);
    state.levels.set(sub.mid, () => peak);
  }

  function fmtp(sdp) {
    return [...sdp.matchAll(/a=(rtpmap|fmtp|setup):([^\r\n]*)/g)].map((m) => `${m[1]}:${m[2]}`);
  }

  window.interop = {
    async start(wsUrl, uid, rid) {
      const { Client } = await import("/static/aiosfu.js");
      const client = new Client({ iceServers: [] });
      for (const method of ["stream-add", "stream-remove", "peer-join", "publish-failed", "subscribe-failed"]) {
        client.on(method, (data) => state.notifications.push({ method, data }));
      }
      await client.connect(wsUrl, uid);
      const joined = await client.join(rid);
      state.client = client;
      state.rid = rid;
      state.pubs = joined.pubs;
      return joined;
    },

    async publish(options = {}) {
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: options.audio ?? true,
        video: options.video === false ? false : { width: 640, height: 480 },
      });
      const pub = await withCodec(options, () => state.client.publish(state.rid, stream));
      return { mid: pub.mid, sfuid: pub.sfuid, offer: fmtp(pub.pc.localDescription.sdp), answer: fmtp(pub.pc.remoteDescription.sdp) };
    },

    /** Subscribe to `uid`'s first stream, from join's pubs or the stream-add that follows. */
    async subscribeTo(uid, options = {}) {
      const deadline = performance.now() + (options.within ?? 15000);
      let pub;
      while (!(pub = [...state.pubs, ...state.notifications.filter((n) => n.method === "stream-add").map((n) => n.data)].find((p) => p.uid === uid))) {
        if (performance.now() > deadline) throw new Error(`no stream from ${uid}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      try {
        const sub = await withCodec(options, () => state.client.subscribe(state.rid, pub.mid, pub.sfuid, pub.minfo));
        listen(sub);
        return { ok: true, mid: pub.mid, sid: sub.sid, offer: fmtp(sub.pc.localDescription.sdp), answer: fmtp(sub.pc.remoteDescription.sdp) };
      } catch (err) {
        return { ok: false, mid: pub.mid, code: err.code, reason: err.reason ?? err.message };
      }
    },

    /** What each subscription decoded so far, from the browser's own WebRTC stats. */
    async stats() {
      const out = [];
      for (const sub of state.client.subscriptions.values()) {
        const result = { mid: sub.mid, state: sub.pc.connectionState, video: null, audio: null };
        const report = await sub.pc.getStats();
        report.forEach((s) => {
          if (s.type !== "inbound-rtp") return;
          const codec = report.get(s.codecId)?.mimeType ?? null;
          if (s.kind === "video") {
            result.video = { framesDecoded: s.framesDecoded ?? 0, frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0, packetsLost: s.packetsLost ?? 0, codec };
          } else if (s.kind === "audio") {
            const level = state.levels.get(sub.mid);
            result.audio = {
              packetsReceived: s.packetsReceived ?? 0,
              level: level ? level() : 0,
              totalSamplesReceived: s.totalSamplesReceived ?? 0,
              totalAudioEnergy: s.totalAudioEnergy ?? 0,
              codec,
            };
          }
        });
        out.push(result);
      }
      return out;
    },

    publishStates() {
      return [...state.client.publications.values()].map((p) => ({ mid: p.mid, state: p.pc.connectionState }));
    },

    notifications() {
      return state.notifications;
    },
  };
})();
