package golden

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ckptgate/ckptgate/convert"
	"github.com/ckptgate/ckptgate/reports"
)

// The committed recording compares clean against a fresh conversion of the
// checkpoint it was made from, and against run 2's checkpoint: the second
// generator run trained to the same bytes (its .distcp files equal run 1's),
// and only its DCP .metadata differs, which is noted, not counted.
func TestCommittedGoldenComparesClean(t *testing.T) {
	want := committed(t)
	for _, tc := range []struct {
		name, source, sourceNote string
	}{
		{"run 1", filepath.Join(fixtures, "runs", "fsdp1"), ""},
		{"run 2", run2Source(t), "bytes differ but its entries and item placement are equal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := convert.OpenSource(tc.source)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			got, err := RecordFor(context.Background(), want, Options{Model: fsdp1Model(t), Source: src})
			if err != nil {
				t.Fatal(err)
			}
			fs := Compare(want, got, DefaultTolerances)
			seen := map[string]bool{}
			for _, f := range fs {
				seen[f.ID] = true
				if f.Status != reports.StatusPass {
					t.Errorf("%s %s: %s: %s", f.ID, f.Subject, f.Status, f.Message)
				}
			}
			for _, item := range Items {
				if !seen[ID(item)] {
					t.Errorf("no finding for %s", ID(item))
				}
			}
			src1 := byKey(fs)["golden.source source tensors"]
			if !strings.Contains(src1.Message, "100 of 100 source tensors bit-identical") {
				t.Errorf("golden.source: %s", src1.Message)
			}
			if tc.sourceNote == "" && strings.Contains(src1.Message, "noted") {
				t.Errorf("golden.source notes a difference for the same checkpoint: %s", src1.Message)
			}
			if !strings.Contains(src1.Message, tc.sourceNote) {
				t.Errorf("golden.source: %q lacks %q", src1.Message, tc.sourceNote)
			}
		})
	}
}

// A recording whose images are gone still compares: the image items are
// skipped with the path it looked for, the rest is judged.
func TestMissingImagesAreSkipped(t *testing.T) {
	want := committed(t)
	want.dir = filepath.Join(tmpRoot, "elsewhere", "a", "b")
	got, err := RecordFor(context.Background(), want, Options{Model: fsdp1Model(t)})
	if err != nil {
		t.Fatal(err)
	}
	fs := byKey(Compare(want, got, DefaultTolerances))
	for _, k := range []string{"golden.preprocess " + promptImage, "golden.forward image_user"} {
		f, ok := fs[k]
		if !ok || f.Status != reports.StatusSkip || !strings.Contains(f.Message, "image file not found") {
			t.Errorf("%s: %+v", k, f)
		}
	}
	if f := fs["golden.forward text_user"]; f.Status != reports.StatusPass {
		t.Errorf("text_user: %s %s", f.Status, f.Message)
	}
	if f := fs["golden.source source"]; f.Status != reports.StatusSkip {
		t.Errorf("without --source the source item is skipped: %s %s", f.Status, f.Message)
	}
}

func TestLoadRejects(t *testing.T) {
	if _, err := Load(fixtures); !errors.Is(err, ErrNotRecorded) {
		t.Errorf("the dev fixtures: %v, want ErrNotRecorded", err)
	}
	good, err := os.ReadFile(filepath.Join(recordedFsdp1, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(good); err != nil {
		t.Fatalf("the committed recording: %v", err)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"not json", `{`, "unexpected end"},
		{"other schema", `{"schema": "ckptgate.manifest/v1"}`, `schema is "ckptgate.manifest/v1"`},
		{"no schema", `{}`, `schema is ""`},
		{"top-k", `{"schema": "ckptgate.golden/v1", "inputs": {"top_k": 100000000}}`, "top_k"},
		{"new tokens", `{"schema": "ckptgate.golden/v1", "inputs": {"new_tokens": -1}}`, "new_tokens"},
		{"image name", `{"schema": "ckptgate.golden/v1", "inputs": {"images": [{"name": "../x.png"}]}}`, "not a file name"},
		{"negative shape", `{"schema": "ckptgate.golden/v1", "weights": {"tensors": {"a": {"shape": [-1]}}}}`, "shape [-1]"},
		{"null tensor", `{"schema": "ckptgate.golden/v1", "source": {"tensors": {"a": null}}}`, "null"},
		{"top lengths", `{"schema": "ckptgate.golden/v1", "forward": {"p": {"top_ids": [1, 2], "top_logits": [1]}}}`, "different lengths"},
		{"bad number", `{"schema": "ckptgate.golden/v1", "forward": {"p": {"top_ids": [1], "top_logits": ["x"]}}}`, "NaN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse(%s) = %v, want an error containing %q", tc.doc, err, tc.want)
			}
		})
	}
}

// Write stores image paths relative to the directory written, so that a
// committed recording finds its images from any checkout; Load resolves them.
func TestWriteRelativeImagePaths(t *testing.T) {
	g := committed(t)
	dir := filepath.Join(tmpRoot, "written", "deeper")
	if err := g.Write(dir); err != nil {
		t.Fatal(err)
	}
	back, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range back.Inputs.Images {
		if filepath.IsAbs(im.Path) {
			t.Errorf("%s: absolute path %s", im.Name, im.Path)
		}
		sum, _, err := hashFile(back.ImagePath(im))
		if err != nil || sum != im.SHA256 {
			t.Errorf("%s: %s resolves to %v (sha %s, want %s)", im.Name, im.Path, err, sum, im.SHA256)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, FileName)); st.Mode().Perm() != 0o644 {
		t.Errorf("golden.json mode %v", st.Mode().Perm())
	}
	if !strings.Contains(string(b), `"sample": [`) || strings.Count(string(b), "\n") > 4000 {
		t.Errorf("number arrays are not on one line each (%d lines)", strings.Count(string(b), "\n"))
	}
}

func TestRecordRejectsBadOptions(t *testing.T) {
	ctx := context.Background()
	imgs := fixtureImages(t)
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no model", Options{Model: filepath.Join(tmpRoot, "absent")}, "no such file"},
		{"model is a file", Options{Model: filepath.Join(fixtures, "ENV.json")}, "not a directory"},
		{"prompt image not given", Options{Model: filepath.Join(fixtures, "base"), Images: imgs[:1], PromptImage: promptImage}, "not one of the images"},
		{"same name twice", Options{Model: filepath.Join(fixtures, "base"), Images: []string{imgs[0], imgs[0]}}, "two images are named"},
		{"image absent", Options{Model: filepath.Join(fixtures, "base"), Images: []string{filepath.Join(tmpRoot, "x.png")}}, "no such file"},
		{"top-k", Options{Model: filepath.Join(fixtures, "base"), TopK: -1}, "top-k"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Record(ctx, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Record = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// A directory with weights and nothing else records what it can and says
// why the rest is missing; comparing it with a full recording fails on
// every item it lacks.
func TestRecordPartialDirectory(t *testing.T) {
	dir := filepath.Join(tmpRoot, "weights-only")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(filepath.Join(fsdp1Model(t), "model.safetensors"), filepath.Join(dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	want := committed(t)
	got, err := RecordFor(context.Background(), want, Options{Model: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, item := range []string{ItemConfig, ItemGenerationConfig, ItemTokenizerConfig, ItemImageProcessor, ItemTokenizer, ItemRenders, ItemPreprocess, ItemForward} {
		if got.Missing[item] == "" {
			t.Errorf("missing[%s] is empty", item)
		}
	}
	fs := Compare(want, got, DefaultTolerances)
	st := map[string]reports.Status{}
	for _, f := range fs {
		if f.Status == reports.StatusFail || st[f.ID] == "" {
			st[f.ID] = f.Status
		}
	}
	for _, item := range []string{ItemConfig, ItemTokenizer, ItemRenders, ItemPreprocess, ItemForward, ItemChatTemplate} {
		if st[ID(item)] != reports.StatusFail {
			t.Errorf("%s: %s, want fail", ID(item), st[ID(item)])
		}
	}
	if st[ID(ItemTensors)] != reports.StatusPass {
		t.Errorf("the weights are the same: %s", st[ID(ItemTensors)])
	}
}

func TestNumJSON(t *testing.T) {
	for _, v := range []float64{0, -1.5, 3.0599243640899658, math.NaN(), math.Inf(1), math.Inf(-1), math.SmallestNonzeroFloat64} {
		b, err := Num(v).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var back Num
		if err := back.UnmarshalJSON(b); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !(float64(back) == v || math.IsNaN(v) && math.IsNaN(float64(back))) {
			t.Errorf("%v → %s → %v", v, b, back)
		}
	}
}

func TestCompactScalarArrays(t *testing.T) {
	in := "{\n \"a\": [\n  1,\n  2\n ],\n \"b\": [\n  {\n   \"c\": \"x [ y\"\n  }\n ],\n \"d\": [\n  \"s, \\\" ]\"\n ]\n}"
	want := "{\n \"a\": [1,2],\n \"b\": [\n  {\n   \"c\": \"x [ y\"\n  }\n ],\n \"d\": [\"s, \\\" ]\"]\n}"
	if got := string(compactScalarArrays([]byte(in))); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestSamplePositions(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		k    int
		want []int64
	}{
		{0, 4, []int64{}},
		{3, 4, []int64{0, 1, 2}},
		{10, 4, []int64{0, 2, 5, 7}},
		{math.MaxInt64, 2, []int64{0, math.MaxInt64 / 2}},
	} {
		if got := SamplePositions(tc.n, tc.k); !slices.Equal(got, tc.want) {
			t.Errorf("SamplePositions(%d, %d) = %v, want %v", tc.n, tc.k, got, tc.want)
		}
	}
}
