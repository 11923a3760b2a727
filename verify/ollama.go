//go:build ollama

package verify

import (
	"fmt"

	"github.com/ckptgate/ckptgate/internal/exit"
	"github.com/ckptgate/ckptgate/internal/ollamacheck"
)

// OllamaChecks are the Ollama deployment checks (ollama.*), one per
// ollamacheck.Checks entry. The first of them to run converts the model with
// Ollama's converter, runs it in Ollama's engine and keeps the result for
// the others of the same verification (the same *Inputs). They need the
// goldens (--golden): the smoke prompts and transformers' outputs.
var OllamaChecks = ollamaChecks()

// OllamaReference, when set, supplies the reference the ollama.* checks
// compare Ollama's logits with; nil uses the logits recorded in the goldens.
var OllamaReference func(*Inputs) (ollamacheck.Reference, error)

func ollamaChecks() []*Check {
	var cs []*Check
	for _, info := range ollamacheck.Checks {
		id := info.ID
		cs = append(cs, &Check{
			ID:       id,
			Doc:      info.Doc,
			Requires: []Input{NeedGolden},
			Run: func(p *Pass) error {
				res, err := ollamaResult(p)
				if err != nil {
					return err
				}
				for _, f := range res.Checks {
					if f.ID == id {
						p.Report(f.Status, f.Subject, f.Message, f.Details)
					}
				}
				return nil
			},
		})
	}
	return cs
}

type ollamaRun struct {
	res *ollamacheck.Result
	err error
}

// ollamaResult runs ollamacheck once per verification; every ollama.* check
// reports from the same run.
func ollamaResult(p *Pass) (*ollamacheck.Result, error) {
	in := p.Inputs
	r := p.Env.Shared("ollama", func() any {
		r := &ollamaRun{}
		r.run(in)
		return r
	}).(*ollamaRun)
	return r.res, r.err
}

func (r *ollamaRun) run(in *Inputs) {
	// ollamacheck returns errors only for inputs it cannot read; what
	// Ollama does wrong is in the findings.
	g, err := ollamacheck.LoadGoldens(in.Golden)
	if err != nil {
		r.err = exit.BadInputError(err)
		return
	}
	o := ollamacheck.Options{Model: in.Model, Goldens: g}
	if OllamaReference != nil {
		if o.Reference, err = OllamaReference(in); err != nil {
			r.err = exit.BadInputError(fmt.Errorf("reference for the ollama checks: %w", err))
			return
		}
	}
	// internal/mllama's engine measures what single departures do.
	// When it cannot load the model the forward.* checks say why, and
	// the departures are reported unmeasured.
	if eng, err := ollamacheck.NewEngineReference(in.Model, in.Jobs); err == nil {
		o.Engine = eng
	}
	r.res, err = ollamacheck.Run(o)
	r.err = exit.BadInputError(err)
}
