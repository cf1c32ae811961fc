// A toolcall plugin in TypeScript, built on stubs generated from the
// toolcall.v1 protos by ts-proto (src/gen/, by buf.gen.yaml at the repository
// root) and served with @grpc/grpc-js.
//
// It serves ToolCallback.Invoke on a loopback address, takes a lease from the
// registry, registers its two tools under it (weekday: sync; count_primes:
// async mode), keeps the lease alive and registers again when the registry
// lost them (lease.ts). SIGTERM/SIGINT clear its tools and revoke the lease.
//
// Configuration, the same TOOLCALL_ variables as the Python SDK:
// TOOLCALL_REGISTRY_ADDRESS (127.0.0.1:48911), TOOLCALL_TOKEN or
// TOOLCALL_TOKEN_FILE, TOOLCALL_PLUGIN_ID (ts_plugin), TOOLCALL_PLUGIN_ADDRESS
// (127.0.0.1:0; or unix:/path), TOOLCALL_PLUGIN_LEASE_TTL (6 seconds),
// TOOLCALL_LOG_LEVEL (INFO; DEBUG logs every call).

import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { type sendUnaryData, Server, ServerCredentials, type ServerUnaryCall, status } from '@grpc/grpc-js';
import {
  type ToolCallbackInvokeRequest,
  ToolCallbackInvokeResponse,
  ToolCallbackService,
} from './gen/toolcall/v1/callback';
import { Registrar } from './lease';
import { type CallState, Stopped, ToolError, TOOLS } from './tools';

const env = (name: string, fallback = '') => process.env[`TOOLCALL_${name}`] || fallback;

/** Exits with a message: configuration errors are the operator's to fix. */
function fail(message: string): never {
  console.error(`[ts_plugin] ${message}`);
  process.exit(2);
}

// TOOLCALL_TOKEN, or the file named by TOOLCALL_TOKEN_FILE (at most 4096
// bytes, surrounding space removed); both set, or an empty file, is an error.
function readToken(): string {
  let token = env('TOKEN');
  const path = env('TOKEN_FILE');
  if (token && path) fail('set TOOLCALL_TOKEN or TOOLCALL_TOKEN_FILE, not both');
  if (path) {
    let raw: Buffer;
    try {
      raw = readFileSync(path);
    } catch (err) {
      fail(`cannot read token file ${path}: ${(err as Error).message}`);
    }
    if (raw.length > 4096) fail(`token file ${path} is larger than 4096 bytes`);
    token = raw.toString('utf8').trim();
    if (!token) fail(`token file ${path} is empty`);
  }
  if (!/^[!-~]*$/.test(token)) fail('the token must be printable ASCII without spaces (it is sent in a gRPC header)');
  return token;
}

const REGISTRY = env('REGISTRY_ADDRESS', '127.0.0.1:48911');
const PLUGIN_ID = env('PLUGIN_ID', 'ts_plugin');
const LISTEN = env('PLUGIN_ADDRESS', '127.0.0.1:0');
const LEASE_TTL_S = Number(env('PLUGIN_LEASE_TTL', '6'));
if (!(LEASE_TTL_S >= 1 && LEASE_TTL_S <= 300)) fail('TOOLCALL_PLUGIN_LEASE_TTL must be a number of seconds from 1 to 300');
const DEBUG = env('LOG_LEVEL', 'INFO').toUpperCase() === 'DEBUG';
const TOKEN = readToken();

const log = (...args: unknown[]) => console.error(new Date().toISOString(), `[${PLUGIN_ID}]`, ...args);

// --- ToolCallback: translates between the wire and the tools ----------------

// Messages are built with create(): fields added to the protos later get
// their defaults, and this code keeps compiling.
function errorResult(reason: string): ToolCallbackInvokeResponse {
  return ToolCallbackInvokeResponse.create({ output: null, isError: true, error: reason });
}

/** The call's deadline and cancellation, read when a tool asks (no timer per call). */
function callState(call: ServerUnaryCall<unknown, unknown>): CallState {
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline; // Infinity: none
  return {
    stopped: () => (call.cancelled ? 'cancelled' : Date.now() >= deadlineMs ? 'deadline exceeded' : ''),
  };
}

async function invoke(
  call: ServerUnaryCall<ToolCallbackInvokeRequest, ToolCallbackInvokeResponse>,
  callback: sendUnaryData<ToolCallbackInvokeResponse>,
): Promise<void> {
  const { name, callId } = call.request;
  const tool = Object.hasOwn(TOOLS, name) ? TOOLS[name] : undefined;
  if (!tool) {
    // The caller's view of this plugin is stale: not the tool's fault.
    callback({ code: status.NOT_FOUND, details: `tool '${name}' is not served by plugin '${PLUGIN_ID}'` });
    return;
  }
  if (DEBUG) log(`call ${callId} ${name}`);
  let result: ToolCallbackInvokeResponse;
  try {
    const output = await tool.run(call.request.arguments ?? {}, callState(call));
    result = ToolCallbackInvokeResponse.create({ output: output ?? null });
    ToolCallbackInvokeResponse.encode(result); // a value protobuf cannot carry is this call's error
  } catch (err) {
    if (err instanceof Stopped) {
      // Deadline passed or the caller cancelled: nobody reads a result.
      log(`call ${callId} ${name} stopped: ${err.message}`);
      callback({ code: call.cancelled ? status.CANCELLED : status.DEADLINE_EXCEEDED, details: err.message });
      return;
    }
    if (err instanceof ToolError) {
      log(`tool ${name} failed: ${err.message}`);
      result = errorResult(err.message);
    } else {
      log(`tool ${name} raised`, err); // a bug: logged here, never sent as a stack trace
      result = errorResult(err instanceof Error ? `${err.name}: ${err.message}` : `tool '${name}' failed`);
    }
  }
  callback(null, result);
}

// --- serving ----------------------------------------------------------------

function isLoopback(address: string): boolean {
  if (address.startsWith('unix:')) return true;
  const host = address.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  if (host === 'localhost') return true;
  return isIP(host) === 4 ? host.startsWith('127.') : host === '::1';
}

function main(): void {
  if (!isLoopback(LISTEN)) fail(`plugin address '${LISTEN}' is not a loopback address`);
  const server = new Server({ 'grpc.max_concurrent_streams': 128 });
  server.addService(ToolCallbackService, { invoke });
  server.bindAsync(LISTEN, ServerCredentials.createInsecure(), (err, port) => {
    if (err) {
      log(`cannot listen on ${LISTEN}: ${err.message}`);
      process.exit(1);
    }
    const callbackAddress = LISTEN.startsWith('unix:') ? LISTEN : `${LISTEN.replace(/:\d+$/, '')}:${port}`;
    log(`serving ToolCallback on ${callbackAddress}; registry ${REGISTRY}`);
    const registrar = new Registrar({
      registry: REGISTRY,
      token: TOKEN,
      source: `plugin:${PLUGIN_ID}`,
      callbackAddress,
      leaseTtlS: LEASE_TTL_S,
      tools: TOOLS,
      log,
    });
    registrar.start();
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      log(`${signal}: clearing plugin:${PLUGIN_ID}`);
      await registrar.stop();
      // Let calls in flight finish, but not for ever.
      const force = setTimeout(() => server.forceShutdown(), 2000);
      server.tryShutdown(() => {
        clearTimeout(force);
        process.exit(0);
      });
    };
    for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void stop(signal));
  });
}

main();
