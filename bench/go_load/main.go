// Command go_load is the load generator of bench S3 (python -m bench.storage):
// LLMService.Chat turns, 64 in flight, spread over one or more LLMService
// replicas, each turn on a session no other call in flight is using.
//
// Why Go: at 64 turns in flight the Python client costs about a third of an
// LLMService's CPU per turn, and on a 2-core machine that CPU is taken from the
// replicas under test. The turns are the same F-type turns (one user message,
// offline provider, one tool round), made through the Go stubs generated from
// the toolcall.v1 protos (examples/go_plugin/gen).
//
// The bench drives it over stdin, one command a line, and reads one JSON line
// back per command:
//
//	run <target,target...> <session prefix> <turns>
//	-> {"turns": N, "seconds": S, "turns_per_s": R, "failed": F, "first_error": "..."}
//
// A turn failed when the call failed or its reply does not hold exactly one
// successful tool call.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "toolcall/examples/go_plugin/gen/toolcall/v1"
)

type result struct {
	Turns      int     `json:"turns"`
	Seconds    float64 `json:"seconds"`
	TurnsPerS  float64 `json:"turns_per_s"`
	Failed     int64   `json:"failed"`
	FirstError string  `json:"first_error,omitempty"`
}

type loader struct {
	question    string
	concurrency int
	clients     map[string]pb.LLMServiceClient
}

func (l *loader) client(target string) (pb.LLMServiceClient, error) {
	if c, ok := l.clients[target]; ok {
		return c, nil
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	c := pb.NewLLMServiceClient(conn)
	l.clients[target] = c
	return c, nil
}

func (l *loader) run(targets []string, prefix string, turns int) (result, error) {
	stubs := make([]pb.LLMServiceClient, len(targets))
	// One pool of sessions per target, as many as calls in flight.
	sessions := make([]chan string, len(targets))
	for i, t := range targets {
		c, err := l.client(t)
		if err != nil {
			return result{}, err
		}
		stubs[i] = c
		sessions[i] = make(chan string, l.concurrency)
		for j := 0; j < l.concurrency; j++ {
			sessions[i] <- fmt.Sprintf("%s-%d-%d", prefix, i, j)
		}
	}
	var next, failed atomic.Int64
	var firstError atomic.Value
	fail := func(msg string) {
		failed.Add(1)
		firstError.CompareAndSwap(nil, msg)
	}
	var wg sync.WaitGroup
	started := time.Now()
	for w := 0; w < l.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1) - 1
				if k >= int64(turns) {
					return
				}
				i := int(k % int64(len(targets)))
				session := <-sessions[i]
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				reply, err := stubs[i].Chat(ctx, &pb.ChatRequest{
					SessionId: session,
					Provider:  "offline",
					Messages: []*pb.ChatMessage{
						{Role: pb.MessageRole_MESSAGE_ROLE_USER, Content: l.question},
					},
				})
				cancel()
				sessions[i] <- session
				switch {
				case err != nil:
					fail(err.Error())
				case len(reply.GetToolCalls()) != 1:
					fail(fmt.Sprintf("%d tool calls, not 1", len(reply.GetToolCalls())))
				case reply.GetToolCalls()[0].GetResult().GetIsError():
					fail("tool error: " + reply.GetToolCalls()[0].GetResult().GetError())
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(started).Seconds()
	out := result{Turns: turns, Seconds: took, TurnsPerS: float64(turns) / took, Failed: failed.Load()}
	if e, ok := firstError.Load().(string); ok {
		out.FirstError = e
	}
	return out, nil
}

func main() {
	question := flag.String("question", "What's the weather in Beijing?", "the user message of every turn")
	concurrency := flag.Int("concurrency", 64, "turns in flight")
	flag.Parse()
	l := &loader{question: *question, concurrency: *concurrency, clients: map[string]pb.LLMServiceClient{}}
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	fmt.Println("READY go_load")
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) != 4 || fields[0] != "run" {
			fmt.Fprintf(os.Stderr, "go_load: want 'run <targets> <prefix> <turns>', got %q\n", in.Text())
			os.Exit(2)
		}
		turns, err := strconv.Atoi(fields[3])
		if err != nil || turns < 1 {
			fmt.Fprintf(os.Stderr, "go_load: bad turn count %q\n", fields[3])
			os.Exit(2)
		}
		r, err := l.run(strings.Split(fields[1], ","), fields[2], turns)
		if err != nil {
			fmt.Fprintf(os.Stderr, "go_load: %v\n", err)
			os.Exit(1)
		}
		if err := out.Encode(r); err != nil {
			os.Exit(1)
		}
	}
}
