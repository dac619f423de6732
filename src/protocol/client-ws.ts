/**
 * The client WebSocket of the HTTP API (`GET /v1/ws`, upgraded): one
 * connection carries many API calls at once, answered as they finish, in any
 * order. A request is `{ id, op, body }`; its answer is `{ id, status, body }`,
 * where `status` and `body` are those the HTTP route of the op would answer
 * (an error body is `{ ok: false, error: { code, message } }`). A frame whose
 * id cannot be read is answered with `id: null`. The connection is
 * authenticated like the API, by `Authorization: Bearer <token>` on the
 * upgrade request, and each op needs the scope of its route.
 */
import { type Static, Type } from '@sinclair/typebox';

/** Where the client WebSocket is upgraded on the API port. */
export const CLIENT_WS_PATH = '/v1/ws';

/** The header of the upgrade answer in which the gateway tells the largest frame it takes, in bytes. */
export const MAX_FRAME_HEADER = 'x-fieldmesh-max-frame-bytes';

/** Each op and the HTTP route it is the same call as. */
export const ClientOps = {
  /** `POST /v1/tool_call`: run one tool call and wait for its result. */
  tool_call: { method: 'POST', path: '/v1/tool_call' },
  /** `POST /v1/tasks`: store a tool call and answer at once; it runs in the background. */
  submit_task: { method: 'POST', path: '/v1/tasks' },
} as const;
export type ClientOp = keyof typeof ClientOps;

/** A request's id: chosen by the client, echoed in its answer, unique among the connection's calls in flight. */
export const ClientFrameId = Type.Union([Type.String({ minLength: 1, maxLength: 128 }), Type.Integer({ minimum: 0 })]);

export const ClientRequestFrame = Type.Object({
  id: ClientFrameId,
  op: Type.String({ minLength: 1, maxLength: 64, description: 'One of the ops in ClientOps' }),
  body: Type.Optional(Type.Unknown({ description: 'The body the HTTP route of the op takes' })),
});
export type ClientRequestFrame = Static<typeof ClientRequestFrame>;

export const ClientAnswerFrame = Type.Object({
  id: Type.Union([ClientFrameId, Type.Null()]),
  status: Type.Integer({ description: 'The HTTP status the route answers with' }),
  body: Type.Unknown({ description: 'The body the route answers with' }),
});
export type ClientAnswerFrame = Static<typeof ClientAnswerFrame>;
