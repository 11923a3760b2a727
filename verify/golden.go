package verify

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"weak"

	"github.com/ckptgate/ckptgate/golden"
	"github.com/ckptgate/ckptgate/reports"
)

// GoldenChecks is the golden.* family: the model recorded as `ckptgate
// golden record` does and compared item by item with a recording in
// --golden. They skip when --golden is the dev fixtures' goldens (no
// golden.json), which the template, tokenizer, preprocess and forward
// families check.
var GoldenChecks = []*Check{
	goldenCheck(golden.ItemFiles, `The model's side files, by SHA-256, against the recording's.
Always passes: the message notes files whose bytes changed, appeared or disappeared, since a transformers
4.x and a 5.x directory store the same content in different files; what they hold is judged by the other
golden.* checks.`),
	goldenCheck(golden.ItemConfig, `config.json has the recording's content, whatever transformers version wrote it.
torch_dtype and dtype, and rope_scaling + rope_theta and rope_parameters, are compared as one; the
transformers_version and the form used are noted, not counted. Fails naming every differing field.`),
	goldenCheck(golden.ItemGenerationConfig, `generation_config.json has the recording's content (transformers_version aside).
Fails naming every differing field.`),
	goldenCheck(golden.ItemTokenizerConfig, `tokenizer_config.json (with special_tokens_map.json) has the recording's content.
The named special tokens are compared as the strings transformers resolves them to, from either file;
added_tokens_decoder (golden.tokenizer covers the added tokens), chat_template (golden.chat_template),
tokenizer_class, backend and 5.x's loading arguments are noted, not counted. Fails naming every differing field.`),
	goldenCheck(golden.ItemImageProcessor, `The image-processor config has the recording's values, in either file.
processor_config.json's "image_processor" (5.x) and preprocessor_config.json (4.x) are compared by value, with
MllamaImageProcessor's defaults filled in; the file, image_processor_type and processor_class are noted.
Fails naming every differing field.`),
	goldenCheck(golden.ItemChatTemplate, `Each transformers 5.17 loader (tokenizer, processor) loads the recording's chat template.
Compared by SHA-256 of the template text, whichever file it comes from (chat_template.jinja,
chat_template.json, tokenizer_config.json, processor_config.json); a different file is noted. Fails when the
text differs or a loader gains or loses a template.`),
	goldenCheck(golden.ItemTokenizer, `The tokenizer equals the recording's.
Compares the layout-independent fingerprint (vocabulary, merges, added tokens), a hash of the
normalizer, pre-tokenizer, post-processor and decoder, and the named special tokens. Different bytes
of tokenizer.json alone are noted. Fails on any difference.`),
	goldenCheck(golden.ItemTensors, `Every tensor equals the recording's: exact, within tolerance, or beyond.
Per tensor (by legacy name): passes when the SHA-256 of the raw bytes is equal; warns when the bytes differ
but the sampled values and the L2 norm moved by at most 2^-8 relative (a bf16 re-rounding); fails beyond
that, on a dtype or shape change, a missing or extra tensor, or a different key layout. Shard files are noted.`),
	goldenCheck(golden.ItemSource, `The training checkpoint (--source) equals the one recorded, as stored.
Compares its format, key layout, every tensor's name, dtype, shape and checksum (as golden.tensors does), so
that a torch or trainer change in DCP naming or dtypes shows up. Chunk counts, the DCP metadata version, its
non-tensor items and its raw bytes are noted. Skips when either side has no source.`),
	goldenCheck(golden.ItemRenders, `The chat template renders the recording's conversations exactly as recorded.
The conversations are the dev fixtures' suite (text, images, several turns, a system message, tools, a tool
call and its result, a refused conversation), rendered with the template a 5.17 processor loads and
tokenized without special tokens. Fails per conversation, showing the first difference.`),
	goldenCheck(golden.ItemEncodings, `The tokenizer encodes and decodes the recording's strings exactly as recorded.
Fails per string on different ids (with and without BOS) or decoded text.`),
	goldenCheck(golden.ItemPreprocess, `The recording's images preprocess as recorded.
Each image (found by the path recorded relative to the golden directory, and skipped when missing or
changed) is preprocessed with the model's image processor. Passes on bit-identical pixel_values; warns when
the geometry is equal and sampled pixels and tile/channel means moved by at most 0.02 and 0.005; fails beyond.`),
	goldenCheck(golden.ItemForward, `The reference engine's outputs equal the recording's: exact, within tolerance, or beyond.
For a text and an image prompt: the input ids must be equal; passes on bit-identical last-position logits and
greedy tokens; warns when the top-5 ids and the greedy tokens are equal and the logits on the recording's top
256 ids are within the policy's max_golden_rel_rms (default 1e-4) relative RMS; fails beyond.`),
}

// goldenCheck is one item's check: it reports the findings of the shared
// comparison that carry its ID.
func goldenCheck(item, doc string) *Check {
	c := &Check{ID: golden.ID(item), Doc: doc, Requires: []Input{NeedGolden}}
	c.Run = func(p *Pass) error {
		st := goldenOf(p)
		switch {
		case st.skip != "":
			p.Skipf(golden.FileName, "%s", st.skip)
			return nil
		case st.err != nil && item == golden.ItemFiles:
			p.Failf(golden.FileName, "%v", st.err)
			return nil
		case st.err != nil:
			// Said once, by golden.files.
			p.Skipf(golden.FileName, "nothing to compare: see golden.files")
			return nil
		}
		for _, f := range st.findings {
			if f.ID == c.ID {
				p.Report(f.Status, f.Subject, f.Message, f.Details)
			}
		}
		return nil
	}
	return c
}

// goldenState is the comparison one verification run makes once for all
// golden.* checks.
type goldenState struct {
	once     sync.Once
	skip     string
	err      error
	findings []reports.Check
}

var goldenStates = struct {
	sync.Mutex
	m map[weak.Pointer[Env]]*goldenState
}{m: map[weak.Pointer[Env]]*goldenState{}}

// goldenOf returns the run's comparison, keyed weakly by its Env (which has
// no slot for it) and dropped with it.
func goldenOf(p *Pass) *goldenState {
	if p.Env == nil {
		st := &goldenState{}
		st.once.Do(func() { st.load(p) })
		return st
	}
	key := weak.Make(p.Env)
	goldenStates.Lock()
	st, ok := goldenStates.m[key]
	if !ok {
		st = &goldenState{}
		goldenStates.m[key] = st
		runtime.AddCleanup(p.Env, func(k weak.Pointer[Env]) {
			goldenStates.Lock()
			delete(goldenStates.m, k)
			goldenStates.Unlock()
		}, key)
	}
	goldenStates.Unlock()
	st.once.Do(func() { st.load(p) })
	return st
}

func (st *goldenState) load(p *Pass) {
	if !golden.IsRecorded(p.Golden) {
		st.skip = fmt.Sprintf("%s has no %s, so it is not a recording of `ckptgate golden record`; the dev fixtures' goldens there are checked by template.golden, tokenizer.golden, preprocess.golden and forward.golden",
			p.Golden, golden.FileName)
		return
	}
	want, err := golden.Load(p.Golden)
	if err != nil {
		st.err = err
		return
	}
	o := golden.Options{Model: p.Model, Jobs: p.Jobs}
	if want.Source != nil {
		o.Source = p.Source
	}
	got, err := golden.RecordFor(context.Background(), want, o)
	if err != nil {
		st.err = fmt.Errorf("recording the model to compare it: %w", err)
		return
	}
	tol := golden.DefaultTolerances
	if p.Policy != nil && p.Policy.Thresholds.MaxGoldenRelRMS > 0 {
		tol.LogitsRelRMS = p.Policy.Thresholds.MaxGoldenRelRMS
	}
	st.findings = golden.Compare(want, got, tol)
}
