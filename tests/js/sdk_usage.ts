// An application written against the SDK's declarations (aiosfu.d.ts): tests/test_js_sdk_package.py
// type-checks it with tsc --noEmit and never runs it.
import { Client, Mesh, OPEN_GRANTS, SignalError, defaultUrl } from "../../src/aiosfu/web/aiosfu.js";
import type { Publication, StreamInfo, Subscription } from "../../src/aiosfu/web/aiosfu.js";

export async function classroom(video: HTMLVideoElement, token: string): Promise<number> {
  const client = new Client({ reconnect: true, reconnectDelay: 250, iceServers: [] });
  await client.connect(defaultUrl(), "alice", { token });
  const joined = await client.join("math-101", { mode: "sfu" });
  const camera = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  const mine: Publication = await client.publish("math-101", camera, { dataChannels: ["chat"] });
  mine.channels.get("chat")?.send({ text: "hello" });
  const watch = async (p: StreamInfo): Promise<Subscription> => {
    const sub = await client.subscribe(p.rid, p.mid, p.sfuid, p.minfo);
    video.srcObject = sub.stream;
    return sub;
  };
  await Promise.all(joined.pubs.map(watch));
  client.on("stream-add", (p) => void watch(p));
  client.on("resubscribed", ({ subscription }) => {
    video.srcObject = subscription.stream;
  });
  client.on("republished", ({ oldMid, publication }) => console.log(oldMid, publication.mid));
  client.on("reconnecting", ({ attempt, delay }) => console.log(attempt * delay));
  const off = client.on("reconnected", ({ rooms, failed }) => console.log(rooms.length, failed));
  off();
  try {
    await client.record("math-101", mine.mid);
  } catch (err) {
    if (err instanceof SignalError && err.code === "not-in-room") return -1;
  }
  const mesh = new Mesh(client, "study-group", { stream: camera });
  await mesh.join({ capacity: 4 });
  const sent: number = mesh.send({ hi: true });
  client.close();
  return sent + (client.can("math-101", "canPublish") && OPEN_GRANTS.canSubscribe ? 1 : 0);
}
