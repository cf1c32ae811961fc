package main

import (
	"testing"

	pb "toolcall/examples/go_plugin/gen/toolcall/v1"
)

// A registry from before tools_per_role sends an empty map: only the
// distinct-name count can say something is missing.
func TestMissingFallsBackToTheNameCountWithoutToolsPerRole(t *testing.T) {
	r := &registrar{registered: 2, perRole: map[string]int{"default": 2, "support": 2}}
	for _, c := range []struct {
		reply *pb.KeepAliveResponse
		want  string
	}{
		{&pb.KeepAliveResponse{Tools: 2}, ""},
		{&pb.KeepAliveResponse{Tools: 1}, "1 of 2 tools"},
		{&pb.KeepAliveResponse{Tools: 2, ToolsPerRole: map[string]int32{"default": 2, "support": 1}}, `1 of 2 in role "support"`},
		{&pb.KeepAliveResponse{Tools: 2, ToolsPerRole: map[string]int32{"default": 2, "support": 2}}, ""},
	} {
		if got := r.missing(c.reply); got != c.want {
			t.Errorf("missing(%v) = %q, want %q", c.reply, got, c.want)
		}
	}
}
