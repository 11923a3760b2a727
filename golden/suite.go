package golden

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"time"
)

// suiteJSON holds the inputs every recording uses: the conversations,
// strings and forward prompts of goldens/gen/make_fixtures.py, for which the
// dev fixtures' goldens.json records what transformers made.
//
//go:embed suite.json
var suiteJSON []byte

// suite is suite.json decoded.
type suite struct {
	DateString    string         `json:"date_string"`
	Conversations []conversation `json:"conversations"`
	Strings       []string       `json:"strings"`
	Prompts       []prompt       `json:"prompts"`
}

// conversation is one apply_chat_template call: messages and keyword
// arguments, kept raw so that they decode in document order.
type conversation struct {
	Name     string          `json:"name"`
	Messages json.RawMessage `json:"messages"`
	Kwargs   json.RawMessage `json:"kwargs"`
}

// prompt is a forward prompt; Image says whether it takes the prompt image.
type prompt struct {
	Name     string          `json:"name"`
	Messages json.RawMessage `json:"messages"`
	Image    bool            `json:"image"`
}

// builtin is the decoded suite; suite.json is part of the binary, so a
// decoding failure is a build defect and panics at start-up.
var builtin = func() *suite {
	var s suite
	if err := json.Unmarshal(suiteJSON, &s); err != nil {
		panic(fmt.Sprintf("golden: suite.json: %v", err))
	}
	return &s
}()

// suiteClock is strftime_now's clock: renders must not depend on the day
// they are made.
func suiteClock() time.Time { return time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC) }

// The recording's defaults.
const (
	// DefaultNewTokens is how many tokens the forward prompts generate, as
	// the dev fixtures' forward goldens do.
	DefaultNewTokens = 12
	// DefaultTopK is how many last-position logits a recording keeps.
	DefaultTopK = 256
	// SampleSize is how many values of each tensor and image a recording
	// keeps, at SamplePositions.
	SampleSize = 32
)

// SamplePositions spreads up to k positions evenly over n elements; tensors
// of one shape are sampled at the same positions.
func SamplePositions(n int64, k int) []int64 {
	m := min(n, int64(k))
	pos := make([]int64, m)
	for i := range pos {
		pos[i] = int64(i) * (n / m)
		// n/m·i stays below n and avoids the overflow of i·n for huge n.
		if r := n % m; r != 0 {
			pos[i] += int64(i) * r / m
		}
	}
	return pos
}
