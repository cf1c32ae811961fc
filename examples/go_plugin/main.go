// Command go_plugin is a toolcall plugin in Go, built on stubs generated from
// the toolcall.v1 protos (gen/, by buf.gen.yaml at the repository root).
//
// It serves ToolCallback.Invoke on a loopback address, takes a lease from the
// registry, registers its two tools under it (weekday: sync; count_primes:
// async mode), keeps the lease alive and registers again when the registry
// lost them (lease.go). SIGTERM/SIGINT clear its tools and revoke the lease.
//
// Configuration, the same TOOLCALL_ variables as the Python SDK:
// TOOLCALL_REGISTRY_ADDRESS (127.0.0.1:48911), TOOLCALL_TOKEN or
// TOOLCALL_TOKEN_FILE, TOOLCALL_PLUGIN_ID (go_plugin), TOOLCALL_PLUGIN_ADDRESS
// (127.0.0.1:0; or unix:/path), TOOLCALL_PLUGIN_LEASE_TTL (6 seconds),
// TOOLCALL_LOG_LEVEL (INFO; DEBUG logs every call).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	pb "toolcall/examples/go_plugin/gen/toolcall/v1"
)

type config struct {
	registry, token, pluginID, listen string
	leaseTTL                          time.Duration
}

func env(name, fallback string) string {
	if v := os.Getenv("TOOLCALL_" + name); v != "" {
		return v
	}
	return fallback
}

func loadConfig() (config, error) {
	c := config{
		registry: env("REGISTRY_ADDRESS", "127.0.0.1:48911"),
		pluginID: env("PLUGIN_ID", "go_plugin"),
		listen:   env("PLUGIN_ADDRESS", "127.0.0.1:0"),
	}
	ttl, err := strconv.ParseFloat(env("PLUGIN_LEASE_TTL", "6"), 64)
	if err != nil || ttl < 1 || ttl > 300 {
		return c, fmt.Errorf("TOOLCALL_PLUGIN_LEASE_TTL must be a number of seconds from 1 to 300")
	}
	c.leaseTTL = time.Duration(ttl * float64(time.Second))
	c.token, err = readToken(os.Getenv("TOOLCALL_TOKEN"), os.Getenv("TOOLCALL_TOKEN_FILE"))
	return c, err
}

// readToken follows the Python SDK: TOOLCALL_TOKEN, or the file named by
// TOOLCALL_TOKEN_FILE (at most 4096 bytes, surrounding space removed); both
// set, or an empty file, is an error rather than a guess.
func readToken(value, path string) (string, error) {
	if value != "" && path != "" {
		return "", errors.New("set TOOLCALL_TOKEN or TOOLCALL_TOKEN_FILE, not both")
	}
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("cannot read token file: %w", err)
		}
		defer f.Close()
		raw, err := io.ReadAll(io.LimitReader(f, 4097))
		if err != nil {
			return "", fmt.Errorf("cannot read token file: %w", err)
		}
		if len(raw) > 4096 {
			return "", fmt.Errorf("token file %s is larger than 4096 bytes", path)
		}
		if value = strings.TrimSpace(string(raw)); value == "" {
			return "", fmt.Errorf("token file %s is empty", path)
		}
	}
	for _, r := range value {
		if r <= ' ' || r > '~' {
			return "", errors.New("the token must be printable ASCII without spaces (it is sent in a gRPC header)")
		}
	}
	return value, nil
}

// callback serves ToolCallback: it only translates between the wire and the tools.
type callback struct {
	pb.UnimplementedToolCallbackServer
	pluginID string
}

func (s *callback) Invoke(ctx context.Context, req *pb.ToolCallbackInvokeRequest) (resp *pb.ToolCallbackInvokeResponse, err error) {
	t, ok := tools[req.GetName()]
	if !ok { // the caller's view of this plugin is stale: not the tool's fault
		return nil, status.Errorf(codes.NotFound, "tool %q is not served by plugin %q", req.GetName(), s.pluginID)
	}
	slog.Debug("call", "tool", req.GetName(), "call_id", req.GetCallId())
	defer func() { // a bug in a tool is that call's error, never the plugin's end
		if p := recover(); p != nil {
			slog.Error("tool panicked", "tool", req.GetName(), "panic", p, "stack", string(debug.Stack()))
			resp, err = errorResult(fmt.Sprintf("internal error in tool %q", req.GetName())), nil
		}
	}()
	out, runErr := t.run(ctx, req.GetArguments().AsMap())
	if ctx.Err() != nil { // deadline passed or the caller cancelled: nobody reads a result
		slog.Info("call stopped", "tool", req.GetName(), "call_id", req.GetCallId(), "reason", ctx.Err())
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if runErr != nil {
		slog.Info("tool failed", "tool", req.GetName(), "error", runErr)
		return errorResult(runErr.Error()), nil
	}
	value, convErr := structpb.NewValue(out)
	if convErr != nil {
		return errorResult("result cannot be sent as JSON: " + convErr.Error()), nil
	}
	return &pb.ToolCallbackInvokeResponse{Output: value}, nil
}

func errorResult(reason string) *pb.ToolCallbackInvokeResponse {
	return &pb.ToolCallbackInvokeResponse{Output: structpb.NewNullValue(), IsError: true, Error: reason}
}

// listen opens the callback address; a TCP one must be loopback (the
// registry refuses anything else).
func listen(address string) (net.Listener, string, error) {
	if path, ok := strings.CutPrefix(address, "unix:"); ok {
		l, err := net.Listen("unix", path)
		return l, address, err
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, "", err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, "", fmt.Errorf("plugin address %q is not a loopback address", address)
	}
	l, err := net.Listen("tcp", address)
	if err != nil {
		return nil, "", err
	}
	return l, l.Addr().String(), nil
}

func main() {
	level := new(slog.LevelVar)
	_ = level.UnmarshalText([]byte(strings.Replace(env("LOG_LEVEL", "INFO"), "WARNING", "WARN", 1)))
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))

	cfg, err := loadConfig()
	if err != nil {
		slog.Error("bad configuration", "error", err)
		os.Exit(2)
	}
	lis, callbackAddress, err := listen(cfg.listen)
	if err != nil {
		slog.Error("cannot listen", "address", cfg.listen, "error", err)
		os.Exit(1)
	}
	// Bounded: at most 128 calls at once per connection, 4 MiB per message (the default).
	server := grpc.NewServer(grpc.MaxConcurrentStreams(128))
	pb.RegisterToolCallbackServer(server, &callback{pluginID: cfg.pluginID})
	go func() {
		if err := server.Serve(lis); err != nil {
			slog.Error("serving stopped", "error", err)
			os.Exit(1)
		}
	}()
	slog.Info("serving ToolCallback", "address", callbackAddress, "registry", cfg.registry)

	reg, err := newRegistrar(cfg, callbackAddress)
	if err != nil {
		slog.Error("bad registry address", "address", cfg.registry, "error", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() { reg.run(ctx); close(done) }()
	<-ctx.Done()
	stop()
	<-done
	slog.Info("stopping: clearing tools", "source", reg.source)
	reg.goodbye()

	// Let calls in flight finish, but not for ever.
	stopped := make(chan struct{})
	go func() { server.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		server.Stop()
	}
}
