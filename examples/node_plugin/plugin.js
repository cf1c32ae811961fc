#!/usr/bin/env node
// A toolcall plugin in Node.js, built only from the toolcall.v1 protos.
//
// It serves ToolCallback.Invoke on a loopback port, takes a lease from the
// registry, registers its tools under it, keeps the lease alive (every ttl/3)
// and registers again when the lease is lost (registry restart or expiry) or
// when KeepAlive reports fewer tools than it registered, in total or in any
// role (a `tools clear`, a tool removed from one role only).
// SIGTERM/SIGINT clear its tools and revoke the lease before it exits.
//
// Configuration (environment): TOOLCALL_REGISTRY_ADDRESS (127.0.0.1:48911),
// TOOLCALL_TOKEN, TOOLCALL_PLUGIN_ID (node_text), TOOLCALL_PLUGIN_ADDRESS
// (127.0.0.1:0), TOOLCALL_PLUGIN_LEASE_TTL (6 seconds), TOOLCALL_PROTO_DIR
// (../../protos from this file).
'use strict';

const path = require('path');
const zlib = require('zlib');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const env = (name, fallback) => process.env[`TOOLCALL_${name}`] || fallback;
const REGISTRY = env('REGISTRY_ADDRESS', '127.0.0.1:48911');
const TOKEN = env('TOKEN', '');
const PLUGIN_ID = env('PLUGIN_ID', 'node_text');
const LISTEN = env('PLUGIN_ADDRESS', '127.0.0.1:0');
const LEASE_TTL_S = Number(env('PLUGIN_LEASE_TTL', '6'));
const PROTO_DIR = env('PROTO_DIR', path.resolve(__dirname, '..', '..', 'protos'));
const SOURCE = `plugin:${PLUGIN_ID}`;

const log = (...args) => console.error(new Date().toISOString(), `[${PLUGIN_ID}]`, ...args);

// proto-loader bundles google/protobuf/struct.proto; keepCase keeps the
// proto field names (call_id, not callId); longs: String turns 64-bit fields
// (ToolStats.calls and WatchResponse.revision are uint64) into exact strings
// instead of Long objects.
const packageDefinition = protoLoader.loadSync(
  ['toolcall/v1/callback.proto', 'toolcall/v1/registry.proto'],
  { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] },
);
const v1 = grpc.loadPackageDefinition(packageDefinition).toolcall.v1;

// --- google.protobuf.Struct / Value <-> plain JSON ---------------------------
// proto-loader represents a Value as {kind: 'stringValue', stringValue: 'x', ...}
// (the "kind" oneof names the field that is set) and a Struct as {fields: {...}}.

function fromValue(value) {
  if (!value || !value.kind) return null;
  switch (value.kind) {
    case 'nullValue': return null;
    case 'numberValue': return value.numberValue;
    case 'stringValue': return value.stringValue;
    case 'boolValue': return value.boolValue;
    case 'structValue': return fromStruct(value.structValue);
    case 'listValue': return (value.listValue.values || []).map(fromValue);
    default: return null;
  }
}

function fromStruct(struct) {
  const out = {};
  for (const [key, value] of Object.entries((struct && struct.fields) || {})) out[key] = fromValue(value);
  return out;
}

function toValue(x) {
  if (x === null || x === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof x === 'number') return { numberValue: x };
  if (typeof x === 'string') return { stringValue: x };
  if (typeof x === 'boolean') return { boolValue: x };
  if (Array.isArray(x)) return { listValue: { values: x.map(toValue) } };
  if (typeof x === 'object') return { structValue: toStruct(x) };
  throw new TypeError(`cannot send ${typeof x} as JSON`);
}

function toStruct(obj) {
  const fields = {};
  for (const [key, value] of Object.entries(obj)) fields[key] = toValue(value);
  return { fields };
}

// --- a PNG, with nothing but zlib ---------------------------------------------
// A PNG is its signature and chunks (length, type, data, CRC-32 of type and
// data); IDAT holds the zlib-deflated rows, each led by a filter byte (0).

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buffer) {
  let c = 0xffffffff;
  for (const byte of buffer) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

// A grayscale PNG of width x height; shade(x, y) gives each pixel (0-255).
function png(width, height, shade) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 0, 0, 0, 0], 8); // 8 bits, grayscale, deflate, no filter, no interlace
  const rows = Buffer.alloc((width + 1) * height);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) rows[y * (width + 1) + 1 + x] = shade(x, y);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', zlib.deflateSync(rows)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// --- the tools ---------------------------------------------------------------

const TEXT_PARAMETERS = {
  type: 'object',
  properties: { text: { type: 'string', description: 'The text to work on.' } },
  required: ['text'],
  additionalProperties: false,
};

const TOOLS = {
  word_count: {
    description: 'Count the words, characters and lines of a text.',
    parameters: TEXT_PARAMETERS,
    run: ({ text }) => ({
      words: text.split(/\s+/).filter(Boolean).length,
      characters: [...text].length,
      lines: text === '' ? 0 : text.split('\n').length,
    }),
  },
  reverse: {
    description: 'Reverse a text, character by character.',
    parameters: TEXT_PARAMETERS,
    run: ({ text }) => [...text].reverse().join(''),
  },
  // Returns an image as a content part beside its JSON output: vision models
  // see the picture itself (docs/plugins.md, content parts).
  length_bar: {
    description: "Draw a text's length as a bar: a PNG image, one column per character (at most 256).",
    parameters: TEXT_PARAMETERS,
    run: ({ text }) => {
      const characters = [...text].length;
      const width = Math.max(1, Math.min(characters, 256));
      const image = png(width, 8, (x) => (x < characters ? 0 : 255));
      return {
        output: { characters, width, height: 8 },
        parts: [{ image: { mime_type: 'image/png', data: image } }],
      };
    },
  },
};

// --- ToolCallback ------------------------------------------------------------

function invoke(call, callback) {
  const { name, arguments: args } = call.request;
  const tool = TOOLS[name];
  if (!tool) {
    callback({ code: grpc.status.NOT_FOUND, details: `tool '${name}' is not served by plugin '${PLUGIN_ID}'` });
    return;
  }
  const input = fromStruct(args);
  if (typeof input.text !== 'string') {
    callback(null, { output: toValue(null), is_error: true, error: 'INVALID_ARGUMENT: arguments.text must be a string' });
    return;
  }
  // The caller's trace: W3C traceparent in the metadata (docs/plugins.md#traces).
  // With @opentelemetry/api, propagation.extract() it and start the tool's
  // span inside; without it, logging it ties a failure to the chat's trace.
  const [traceparent] = call.metadata.get('traceparent');
  try {
    const result = tool.run(input);
    // A tool returns its output, or {output, parts} to add content parts.
    const withParts = result !== null && typeof result === 'object' && Array.isArray(result.parts);
    const output = withParts ? result.output : result;
    callback(null, { output: toValue(output), is_error: false, error: '', parts: withParts ? result.parts : [] });
  } catch (err) {
    log(`tool ${name} failed${traceparent ? ` (traceparent ${traceparent})` : ''}:`, err);
    callback(null, { output: toValue(null), is_error: true, error: `${err.name}: ${err.message}` });
  }
}

// --- registry: lease, register, keep alive -----------------------------------

const registry = new v1.ToolRegistry(REGISTRY, grpc.credentials.createInsecure(), {
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
});

function metadata() {
  const md = new grpc.Metadata();
  if (TOKEN) md.set('authorization', `Bearer ${TOKEN}`);
  return md;
}

// Promise wrapper for one unary registry call with a deadline.
function rpc(method, request, timeoutS = Math.max(1, LEASE_TTL_S / 3)) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutS * 1000);
    registry[method](request, metadata(), { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// registered: tools the registry accepted; perRole: how many of them each
// role holds (from RegisterResponse.affected_roles); partial: a registration
// pass was cut short (a registry error), so the counts are not ours yet.
const state = {
  leaseId: '', callbackAddress: '', stopping: false, loop: null, registered: 0, perRole: {}, partial: false,
};

async function createLease() {
  const lease = await rpc('CreateLease', { ttl_seconds: LEASE_TTL_S, holder: SOURCE });
  state.leaseId = lease.lease_id;
  log(`lease ${state.leaseId} from registry ${lease.instance_id}`);
  return (Number(lease.ttl_seconds) || LEASE_TTL_S) / 3;
}

async function registerTools() {
  state.registered = 0;
  state.perRole = {};
  state.partial = true;
  for (const [name, tool] of Object.entries(TOOLS)) {
    const reply = await rpc('Register', {
      lease_id: state.leaseId,
      tool: {
        name,
        description: tool.description,
        parameters: toStruct(tool.parameters),
        callback_address: state.callbackAddress,
        source: SOURCE,
        timeout_seconds: 10,
        mode: 'TOOL_MODE_SYNC',
      },
    });
    if (!reply.ok) {
      log(`tool ${name} not registered:`, JSON.stringify(reply.failed_roles));
      continue;
    }
    state.registered += 1;
    for (const role of reply.affected_roles) state.perRole[role] = (state.perRole[role] || 0) + 1;
  }
  state.partial = false;
  log(`registered ${Object.keys(TOOLS).join(', ')} under lease ${state.leaseId}`);
}

// Where the registry holds fewer of our tools than we registered ('' if
// nowhere). KeepAliveResponse.tools counts distinct names bound to the lease:
// fewer means some were removed (`toolcall tools clear`, a replacement).
// tools_per_role counts per role: a tool removed from one of its roles only
// still has its name in the others, so only this count shows it. A registry
// too old to send tools_per_role leaves the map empty: the name count alone.
function missing(reply) {
  const tools = Number(reply.tools) || 0;
  if (tools < state.registered) return `${tools} of ${state.registered} tools`;
  const perRole = reply.tools_per_role || {};
  if (Object.keys(perRole).length === 0) return '';
  return Object.entries(state.perRole)
    .filter(([role, n]) => (perRole[role] || 0) < n)
    .map(([role, n]) => `${perRole[role] || 0} of ${n} in role '${role}'`)
    .join('; ');
}

// Runs until stop: (re)registers when there is no lease, else keeps it alive
// and registers again when KeepAlive shows tools missing, as the Python SDK does.
async function registrationLoop() {
  let backoffMs = 100;
  let intervalS = LEASE_TTL_S / 3;
  let lastProblem = '';
  while (!state.stopping) {
    try {
      if (!state.leaseId) {
        intervalS = await createLease();
        await registerTools();
      } else if (state.partial) {
        await registerTools();
      } else {
        const reply = await rpc('KeepAlive', { lease_id: state.leaseId });
        intervalS = (Number(reply.ttl_seconds) || LEASE_TTL_S) / 3;
        const short = missing(reply);
        if (short) {
          log(`the registry lost some of our tools (${short}); registering again`);
          await registerTools();
        }
      }
      backoffMs = 100;
      lastProblem = '';
      await sleep(intervalS * 1000);
    } catch (err) {
      if (state.stopping) break;
      if (err.code === grpc.status.NOT_FOUND) {
        log('lease is gone (expired or the registry restarted); registering again');
        state.leaseId = '';
        continue;
      }
      const problem = `${grpc.status[err.code] || err.code}: ${err.details || err.message}`;
      if (problem !== lastProblem) log(`registry at ${REGISTRY}: ${problem}; retrying`);
      lastProblem = problem;
      await sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, 2000);
    }
  }
}

async function shutdown(server, signal) {
  if (state.stopping) return;
  state.stopping = true;
  log(`${signal}: clearing ${SOURCE}`);
  if (state.leaseId) {
    try {
      const cleared = await rpc('Clear', { source: SOURCE }, 1);
      await rpc('RevokeLease', { lease_id: state.leaseId }, 1);
      log(`cleared ${cleared.removed} tools, lease revoked`);
    } catch (err) {
      log(`could not clear: ${err.details || err.message}`);
    }
  }
  registry.close();
  const force = setTimeout(() => server.forceShutdown(), 2000);
  server.tryShutdown(() => {
    clearTimeout(force);
    process.exit(0);
  });
}

function main() {
  const server = new grpc.Server();
  server.addService(v1.ToolCallback.service, { Invoke: invoke });
  server.bindAsync(LISTEN, grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err) {
      log(`cannot listen on ${LISTEN}: ${err.message}`);
      process.exit(1);
    }
    state.callbackAddress = LISTEN.startsWith('unix:') ? LISTEN : `${LISTEN.replace(/:\d+$/, '')}:${port}`;
    log(`serving ToolCallback on ${state.callbackAddress}; registry ${REGISTRY}`);
    state.loop = registrationLoop();
  });
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => shutdown(server, signal));
}

if (require.main === module) main();

module.exports = { fromValue, fromStruct, toValue, toStruct, TOOLS, missing, state, png };
