package main

// Keeping the tools registered: one goroutine owns every registry call. It
// takes a lease, registers each tool under it, renews the lease every third
// of its ttl, and registers again when the lease is gone (NOT_FOUND: it
// expired, or the registry restarted) or when KeepAlive reports fewer of our
// tools than we registered, in total or in any role. Other errors are retried
// with a backoff (0.1 s doubling to 2 s), keeping the lease.

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	pb "toolcall/examples/go_plugin/gen/toolcall/v1"
)

type registrar struct {
	client          pb.ToolRegistryClient
	conn            *grpc.ClientConn
	token, source   string
	callbackAddress string
	ttl, rpcTimeout time.Duration

	leaseID    string
	partial    bool           // a registration pass was cut short: counts below are not ours yet
	registered int            // tools the registry accepted
	perRole    map[string]int // how many of them each role holds (RegisterResponse.affected_roles)
}

func newRegistrar(cfg config, callbackAddress string) (*registrar, error) {
	conn, err := grpc.NewClient(cfg.registry, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &registrar{
		client: pb.NewToolRegistryClient(conn), conn: conn, token: cfg.token,
		source: "plugin:" + cfg.pluginID, callbackAddress: callbackAddress,
		ttl: cfg.leaseTTL, rpcTimeout: max(time.Second, cfg.leaseTTL/3),
	}, nil
}

// call bounds one registry RPC by a deadline and adds the token.
func (r *registrar) call(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	if r.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.token)
	}
	return ctx, cancel
}

func (r *registrar) run(ctx context.Context) {
	backoff, lastProblem := 100*time.Millisecond, ""
	for {
		wait, err := r.step(ctx)
		if ctx.Err() != nil {
			return
		}
		switch code := status.Code(err); {
		case err == nil:
			backoff, lastProblem = 100*time.Millisecond, ""
		case code == codes.NotFound: // lease gone: a new one, at once
			slog.Warn("lease is gone (expired or the registry restarted); registering again")
			r.leaseID, wait = "", 0
		default:
			if problem := err.Error(); problem != lastProblem {
				slog.Warn("registry call failed; retrying", "registry", r.conn.Target(), "error", problem)
				lastProblem = problem
			}
			wait, backoff = backoff, min(2*backoff, 2*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// step does what the registration needs now; it returns when to come back.
func (r *registrar) step(ctx context.Context) (time.Duration, error) {
	switch {
	case r.leaseID == "":
		if err := r.createLease(ctx); err != nil {
			return 0, err
		}
		return r.ttl / 3, r.registerAll(ctx)
	case r.partial:
		return r.ttl / 3, r.registerAll(ctx)
	}
	cctx, cancel := r.call(ctx, r.rpcTimeout)
	defer cancel()
	reply, err := r.client.KeepAlive(cctx, &pb.KeepAliveRequest{LeaseId: r.leaseID})
	if err != nil {
		return 0, err
	}
	next := r.ttl / 3
	if granted := reply.GetTtlSeconds(); granted > 0 {
		next = time.Duration(granted * float64(time.Second) / 3)
	}
	if short := r.missing(reply); short != "" {
		slog.Warn("the registry lost some of our tools; registering again", "missing", short)
		return next, r.registerAll(ctx)
	}
	return next, nil
}

func (r *registrar) createLease(ctx context.Context) error {
	cctx, cancel := r.call(ctx, r.rpcTimeout)
	defer cancel()
	lease, err := r.client.CreateLease(cctx, &pb.CreateLeaseRequest{TtlSeconds: r.ttl.Seconds(), Holder: r.source})
	if err != nil {
		return err
	}
	r.leaseID = lease.GetLeaseId()
	if granted := lease.GetTtlSeconds(); granted > 0 {
		r.ttl = time.Duration(granted * float64(time.Second))
	}
	slog.Info("lease taken", "lease", r.leaseID, "ttl", r.ttl, "registry", lease.GetInstanceId())
	return nil
}

func (r *registrar) registerAll(ctx context.Context) error {
	r.partial, r.registered, r.perRole = true, 0, map[string]int{}
	for _, name := range slices.Sorted(maps.Keys(tools)) {
		definition, err := r.definition(name, tools[name])
		if err != nil {
			return err
		}
		cctx, cancel := r.call(ctx, r.rpcTimeout)
		reply, err := r.client.Register(cctx, &pb.RegisterRequest{LeaseId: r.leaseID, Tool: definition})
		cancel()
		if code := status.Code(err); code == codes.InvalidArgument || code == codes.FailedPrecondition {
			slog.Error("the registry refused a tool", "tool", name, "error", err) // fix the definition
			continue
		} else if err != nil {
			return err
		}
		if !reply.GetOk() {
			slog.Warn("tool not registered", "tool", name, "failed_roles", reply.GetFailedRoles())
			continue
		}
		r.registered++
		for _, role := range reply.GetAffectedRoles() {
			r.perRole[role]++
		}
	}
	r.partial = false
	slog.Info("tools registered", "count", r.registered, "lease", r.leaseID)
	return nil
}

func (r *registrar) definition(name string, t tool) (*pb.ToolDefinition, error) {
	parameters, err := structpb.NewStruct(t.parameters)
	if err != nil {
		return nil, fmt.Errorf("schema of %s: %w", name, err)
	}
	mode := pb.ToolMode_TOOL_MODE_SYNC
	if t.async {
		mode = pb.ToolMode_TOOL_MODE_ASYNC
	}
	return &pb.ToolDefinition{
		Name: name, Description: t.description, Parameters: parameters,
		CallbackAddress: r.callbackAddress, Source: r.source,
		TimeoutSeconds: 30, Mode: mode, AckMessage: t.ack,
	}, nil
}

// missing says where the registry holds fewer of our tools than we registered
// ("" if nowhere). KeepAliveResponse.tools counts distinct names: fewer means
// some were removed (`toolcall tools clear`, a replacement). tools_per_role
// counts per role: a tool removed from one of its roles only still has its
// name in the others, so only this count shows it. An empty map (a registry
// from before tools_per_role) leaves the name count alone.
func (r *registrar) missing(reply *pb.KeepAliveResponse) string {
	if int(reply.GetTools()) < r.registered {
		return fmt.Sprintf("%d of %d tools", reply.GetTools(), r.registered)
	}
	held := reply.GetToolsPerRole()
	if len(held) == 0 {
		return ""
	}
	var short []string
	for _, role := range slices.Sorted(maps.Keys(r.perRole)) {
		if n := r.perRole[role]; int(held[role]) < n {
			short = append(short, fmt.Sprintf("%d of %d in role %q", held[role], n, role))
		}
	}
	return strings.Join(short, "; ")
}

// goodbye clears our tools and revokes the lease, each bounded by one second:
// best effort, since the lease's expiry covers a failed goodbye.
func (r *registrar) goodbye() {
	defer r.conn.Close()
	if r.leaseID == "" {
		return
	}
	ctx, cancel := r.call(context.Background(), time.Second)
	cleared, err := r.client.Clear(ctx, &pb.ClearRequest{Source: r.source})
	cancel()
	ctx, cancel = r.call(context.Background(), time.Second)
	_, revokeErr := r.client.RevokeLease(ctx, &pb.RevokeLeaseRequest{LeaseId: r.leaseID})
	cancel()
	if err != nil || revokeErr != nil {
		slog.Warn("could not clear; the lease will expire", "clear", err, "revoke", revokeErr)
		return
	}
	slog.Info("tools cleared, lease revoked", "removed", cleared.GetRemoved())
}
