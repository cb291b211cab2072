package session

import (
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// WarmCodecs marshals and unmarshals one message of each kind that registration
// sends and receives, so that protobuf builds its per-type tables (on first use,
// through reflection: about 100 times the cost of a later marshal, which a starved
// TCG guest feels) while the session waits for its connection, not after it. Run
// calls it in its own goroutine; a warm-start template calls it before its snapshot,
// so that every restored copy has the tables already.
func WarmCodecs() {
	reg := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Register{Register: &agentv1.Register{
		AgentId: "warm", Types: []*agentv1.TaskType{{Name: "warm", Slots: 1}}, Running: []*agentv1.RunningTask{{TaskId: "warm", LeaseId: 1}},
		Capacity: &agentv1.Capacity{CpuMillis: 1, Labels: map[string]string{"warm": "warm"}}, Load: &agentv1.Load{Running: 1}}}}
	srv := &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Registered{Registered: &agentv1.Registered{SessionId: "warm", HeartbeatIntervalMs: 1}}}
	for _, m := range []proto.Message{reg, srv} {
		if b, err := proto.Marshal(m); err == nil {
			_ = proto.Unmarshal(b, m.ProtoReflect().New().Interface())
		}
	}
}
