/**
 * Frame batching: every frame sent to one WebSocket in the same turn of the
 * event loop (the burst of TASK frames that follows a group commit) leaves in
 * one TLS write and one syscall rather than one each. The socket is corked at the first send of a turn and
 * uncorked once the turn's callbacks and promise reactions have run, so a
 * frame is never held past the end of the work that produced it.
 */
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

const corked = new WeakSet<Duplex>();

/** The socket under a `ws` WebSocket (its `_socket`; there is no public accessor). */
function socketOf(ws: WebSocket): Duplex | undefined {
  return (ws as unknown as { _socket?: Duplex | null })._socket ?? undefined;
}

/** `ws.send(text)`, batched with the other frames sent to `ws` in this turn of the event loop. */
export function sendBatched(ws: WebSocket, text: string): void {
  const socket = socketOf(ws);
  if (socket && !corked.has(socket) && socket.writable) {
    corked.add(socket);
    socket.cork();
    process.nextTick(() => {
      corked.delete(socket);
      socket.uncork();
    });
  }
  ws.send(text);
}
