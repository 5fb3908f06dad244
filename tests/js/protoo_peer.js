// Two peers on protoo's own client library (protoo-client, as mediasoup's demo uses it)
// talk to the server; every outcome is printed as one JSON line for the Python test.
//   node tests/js/protoo_peer.js ws://127.0.0.1:PORT/ws ROOM
'use strict';

const protooClient = require('protoo-client');

const [url, rid] = process.argv.slice(2);

function report(event, data) {
  process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
}

function connect(uid) {
  const transport = new protooClient.WebSocketTransport(`${url}?peer=${uid}`, { retries: 0 });
  const peer = new protooClient.Peer(transport);
  peer.on('notification', (n) => report('notification', { uid, method: n.method, data: n.data }));
  peer.on('failed', () => report('failed', { uid }));
  return new Promise((resolve, reject) => {
    peer.once('open', () => resolve(peer));
    peer.once('failed', () => reject(new Error(`${uid}: the WebSocket could not be opened`)));
  });
}

async function refused(peer, method, data) {
  try {
    const response = await peer.request(method, data);
    return { ok: true, response };
  } catch (error) {
    return { ok: false, code: error.code, message: error.message };
  }
}

async function main() {
  const alice = await connect('alice');
  report('open', { uid: 'alice' });
  report('join', { uid: 'alice', response: await alice.request('join', { rid }) });
  const offer = { type: 'offer', sdp: 'v=0\r\n' };
  report('subscribe', {
    uid: 'alice',
    ...(await refused(alice, 'subscribe', { rid, mid: 'nobody#0', jsep: offer, sfuid: 'sfu-1' })),
  });
  const bob = await connect('bob');
  report('join', { uid: 'bob', response: await bob.request('join', { rid }) });
  await bob.request('broadcast', { rid, data: { text: 'hello from bob' } });
  report('keepalive', { uid: 'alice', response: await alice.request('keepalive', { rid }) });
  await new Promise((resolve) => setTimeout(resolve, 300)); // let notifications arrive
  bob.close();
  await new Promise((resolve) => setTimeout(resolve, 300)); // peer-leave reaches alice
  alice.close();
  report('done', {});
}

main().catch((error) => {
  report('error', { message: String(error && error.stack ? error.stack : error) });
  process.exit(1);
});
