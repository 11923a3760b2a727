package reports

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRenderedJSONValidates(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.report(t)
			b := render(t, r, FormatJSON)
			if err := ValidateJSON(b); err != nil {
				t.Fatalf("report.json does not validate against schema.json: %v", err)
			}
			// And it reads back as the same report.
			path := filepath.Join(t.TempDir(), JSONFile)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			back, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(r, back, sameJSON); d != "" {
				t.Errorf("report changed through report.json (-wrote +read):\n%s", d)
			}
		})
	}
	if err := ValidateJSON(render(t, New(""), FormatJSON)); err != nil {
		t.Errorf("an empty report does not validate: %v", err)
	}
}

func TestDetailsValidate(t *testing.T) {
	d := loadDerived(t)
	for _, tc := range []struct {
		shape string
		v     any
	}{
		{"DriftDetails", d.Drift}, {"DriftDetails", d.DriftSwapped},
		{"SourceDetails", d.Source}, {"SourceDetails", d.SourceTruncated},
		{"LogitsDetails", d.LogitsBF16}, {"LogitsDetails", d.LogitsWrong},
		{"DriftDetails", DriftDetails{}}, {"SourceDetails", SourceDetails{}}, {"LogitsDetails", LogitsDetails{}},
	} {
		if err := ValidateDetails(tc.shape, MustDetails(tc.v)); err != nil {
			t.Errorf("%s: %v", tc.shape, err)
		}
	}
	// The shapes are not interchangeable.
	if err := ValidateDetails("LogitsDetails", MustDetails(d.Drift)); err == nil {
		t.Error("DriftDetails validated as LogitsDetails")
	}
	if err := ValidateDetails("DriftDetails", []byte(`{"tensors":[{"name":"x","layer":-2,"group":"text","rel_l2":0,"max_abs":0,"changed_frac":0,"norm_ratio":1}]}`)); err == nil {
		t.Error("a layer of -2 validated")
	}
}

// TestSchemaRefuses mutates a valid report.json and expects each mutation to
// be refused, naming the offending place.
func TestSchemaRefuses(t *testing.T) {
	// Details are not what this test is about; without them it is fast.
	r := failingReport(t)
	for i := range r.Checks {
		r.Checks[i].Details = nil
	}
	valid := render(t, r, FormatJSON)
	for _, tc := range []struct {
		name   string
		mutate func(m map[string]any)
		where  string
	}{
		{"wrong schema", func(m map[string]any) { m["schema"] = "ckptgate.report/v2" }, "/schema"},
		{"verdict pass with a failure", func(m map[string]any) { m["verdict"] = "pass" }, "/verdict"},
		{"unknown verdict", func(m map[string]any) { m["verdict"] = "ok" }, "/verdict"},
		{"unknown field", func(m map[string]any) { m["extra"] = 1 }, "extra"},
		{"missing toolchain", func(m map[string]any) { delete(m, "toolchain") }, "toolchain"},
		{"null inputs", func(m map[string]any) { m["inputs"] = nil }, "/inputs"},
		{"negative timing", func(m map[string]any) { m["timings"].(map[string]any)["verify"] = -1 }, "/timings/verify"},
		{"unknown status", func(m map[string]any) { check(m, 0)["status"] = "error" }, "/checks/0/status"},
		{"missing message", func(m map[string]any) { delete(check(m, 1), "message") }, "/checks/1"},
		{"id without family", func(m map[string]any) { check(m, 2)["id"] = "drift" }, "/checks/2/id"},
		{"id with a space", func(m map[string]any) { check(m, 2)["id"] = "tensors.dr ift" }, "/checks/2/id"},
		{"non-string input", func(m map[string]any) { m["inputs"].(map[string]any)["model"] = 3 }, "/inputs/model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(valid, &m); err != nil {
				t.Fatal(err)
			}
			tc.mutate(m)
			b, _ := json.Marshal(m)
			err := ValidateJSON(b)
			if err == nil {
				t.Fatal("validated")
			}
			if !strings.Contains(err.Error(), tc.where) {
				t.Errorf("error does not name %s:\n%v", tc.where, err)
			}
		})
	}
	if err := ValidateJSON([]byte(`{"schema":`)); err == nil {
		t.Error("truncated JSON validated")
	}
}

// sameJSON compares Details by value: WriteJSON re-indents them.
var sameJSON = cmp.Comparer(func(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
})

func check(m map[string]any, i int) map[string]any {
	return m["checks"].([]any)[i].(map[string]any)
}

func TestSchemaJSONIsACopy(t *testing.T) {
	b := SchemaJSON()
	b[0] = 'x'
	if SchemaJSON()[0] == 'x' {
		t.Error("SchemaJSON returns the embedded bytes themselves")
	}
}
