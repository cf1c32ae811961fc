// Keeping the tools registered: one loop owns every registry call. It takes a
// lease, registers each tool under it, renews the lease every third of its
// ttl, and registers again when the lease is gone (NOT_FOUND: it expired, or
// the registry restarted) or when KeepAlive reports fewer of our tools than
// we registered, in total or in any role. Other errors are retried with a
// backoff (0.1 s doubling to 2 s), keeping the lease.

import { type CallOptions, type ClientUnaryCall, credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { ToolDefinition, ToolMode } from './gen/toolcall/v1/tools';
import {
  ClearRequest,
  CreateLeaseRequest,
  KeepAliveRequest,
  type KeepAliveResponse,
  RegisterRequest,
  type RegisterResponse,
  RevokeLeaseRequest,
  ToolRegistryClient,
} from './gen/toolcall/v1/registry';
import type { Tool } from './tools';

// A generated client method, in its (request, metadata, options, callback) form.
type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (err: ServiceError | null, reply: Res) => void,
) => ClientUnaryCall;

export interface RegistrarOptions {
  registry: string;
  token: string;
  source: string;
  callbackAddress: string;
  leaseTtlS: number;
  tools: Record<string, Tool>;
  log: (...args: unknown[]) => void;
}

export class Registrar {
  private readonly client: ToolRegistryClient;
  private readonly rpcTimeoutS: number;
  private ttlS: number;
  private leaseId = '';
  private partial = false; // a registration pass was cut short: the counts are not ours yet
  registered = 0; // tools the registry accepted
  perRole: Record<string, number> = {}; // how many of them each role holds
  private stopping = false;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;

  constructor(private readonly opts: RegistrarOptions) {
    this.client = new ToolRegistryClient(opts.registry, credentials.createInsecure(), {
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    });
    this.ttlS = opts.leaseTtlS;
    this.rpcTimeoutS = Math.max(1, opts.leaseTtlS / 3);
  }

  /**
   * One registry call, bounded by a deadline, with the token. Requests are
   * built with create(): fields added to the protos later get their
   * defaults, and this code keeps compiling.
   */
  private rpc<Req, Res>(method: Unary<Req, Res>, request: Req, timeoutS = this.rpcTimeoutS): Promise<Res> {
    const metadata = new Metadata();
    if (this.opts.token) metadata.set('authorization', `Bearer ${this.opts.token}`);
    const deadline = new Date(Date.now() + timeoutS * 1000);
    return new Promise((resolve, reject) => {
      method.call(this.client, request, metadata, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
    });
  }

  start(): void {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    let backoffMs = 100;
    let lastProblem = '';
    while (!this.stopping) {
      let waitMs: number;
      try {
        waitMs = await this.step();
        backoffMs = 100;
        lastProblem = '';
      } catch (err) {
        if (this.stopping) break;
        const e = err as ServiceError;
        if (e.code === status.NOT_FOUND) {
          this.opts.log('lease is gone (expired or the registry restarted); registering again');
          this.leaseId = '';
          continue;
        }
        const problem = `${status[e.code] ?? e.code}: ${e.details ?? e.message}`;
        if (problem !== lastProblem) this.opts.log(`registry at ${this.opts.registry}: ${problem}; retrying`);
        lastProblem = problem;
        waitMs = backoffMs;
        backoffMs = Math.min(backoffMs * 2, 2000);
      }
      // Sleep, unless stop() wakes us.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Does what the registration needs now; returns when to come back (ms). */
  private async step(): Promise<number> {
    if (!this.leaseId) {
      await this.createLease();
      await this.registerAll();
    } else if (this.partial) {
      await this.registerAll();
    } else {
      const reply = await this.rpc(this.client.keepAlive, KeepAliveRequest.create({ leaseId: this.leaseId }));
      if (reply.ttlSeconds > 0) this.ttlS = reply.ttlSeconds;
      const short = this.missing(reply);
      if (short) {
        this.opts.log(`the registry lost some of our tools (${short}); registering again`);
        await this.registerAll();
      }
    }
    return (this.ttlS / 3) * 1000;
  }

  private async createLease(): Promise<void> {
    const request = CreateLeaseRequest.create({ ttlSeconds: this.opts.leaseTtlS, holder: this.opts.source });
    const lease = await this.rpc(this.client.createLease, request);
    this.leaseId = lease.leaseId;
    if (lease.ttlSeconds > 0) this.ttlS = lease.ttlSeconds;
    this.opts.log(`lease ${this.leaseId} (ttl ${this.ttlS}s) from registry ${lease.instanceId}`);
  }

  private async registerAll(): Promise<void> {
    this.partial = true;
    this.registered = 0;
    this.perRole = {};
    for (const [name, tool] of Object.entries(this.opts.tools)) {
      let reply: RegisterResponse;
      try {
        const definition = ToolDefinition.create({
          name,
          description: tool.description,
          parameters: tool.parameters,
          callbackAddress: this.opts.callbackAddress,
          source: this.opts.source,
          timeoutSeconds: 30,
          mode: tool.async ? ToolMode.TOOL_MODE_ASYNC : ToolMode.TOOL_MODE_SYNC,
          ackMessage: tool.ack ?? '',
        });
        reply = await this.rpc(this.client.register, RegisterRequest.create({ leaseId: this.leaseId, tool: definition }));
      } catch (err) {
        const e = err as ServiceError;
        if (e.code !== status.INVALID_ARGUMENT && e.code !== status.FAILED_PRECONDITION) throw err;
        this.opts.log(`the registry refused tool ${name}: ${e.details}`); // fix the definition
        continue;
      }
      if (!reply.ok) {
        this.opts.log(`tool ${name} not registered:`, JSON.stringify(reply.failedRoles));
        continue;
      }
      this.registered += 1;
      for (const role of reply.affectedRoles) this.perRole[role] = (this.perRole[role] ?? 0) + 1;
    }
    this.partial = false;
    this.opts.log(`registered ${this.registered} tools under lease ${this.leaseId}`);
  }

  /**
   * Where the registry holds fewer of our tools than we registered ('' if
   * nowhere). KeepAliveResponse.tools counts distinct names: fewer means some
   * were removed (`toolcall tools clear`, a replacement). toolsPerRole counts
   * per role: a tool removed from one of its roles only still has its name in
   * the others, so only this count shows it. An empty map (a registry from
   * before tools_per_role) leaves the name count alone.
   */
  missing(reply: Pick<KeepAliveResponse, 'tools' | 'toolsPerRole'>): string {
    if (reply.tools < this.registered) return `${reply.tools} of ${this.registered} tools`;
    const held = reply.toolsPerRole ?? {};
    if (Object.keys(held).length === 0) return '';
    return Object.entries(this.perRole)
      .filter(([role, n]) => (held[role] ?? 0) < n)
      .map(([role, n]) => `${held[role] ?? 0} of ${n} in role '${role}'`)
      .join('; ');
  }

  /** Stops the loop, clears our tools and revokes the lease (1 s each; the lease's expiry covers a failure). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
    if (this.leaseId) {
      try {
        const cleared = await this.rpc(this.client.clear, ClearRequest.create({ source: this.opts.source }), 1);
        await this.rpc(this.client.revokeLease, RevokeLeaseRequest.create({ leaseId: this.leaseId }), 1);
        this.opts.log(`cleared ${cleared.removed} tools, lease revoked`);
      } catch (err) {
        this.opts.log(`could not clear; the lease will expire: ${(err as ServiceError).details ?? err}`);
      }
    }
    this.client.close();
  }
}
