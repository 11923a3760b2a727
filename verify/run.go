package verify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/ckptgate/ckptgate/internal/mllama"
	"github.com/ckptgate/ckptgate/internal/safetensors"
	"github.com/ckptgate/ckptgate/reports"
)

// Open prepares the environment every check shares: the weights of model and
// base, their configs, and the streaming scan. Problems with the inputs are
// recorded in Env for the checks to report, not returned; only a failure of
// the scan itself (I/O, internal) is an error.
func Open(ctx context.Context, in *Inputs) (*Env, error) {
	env := &Env{}
	env.Weights, env.WeightsErr = safetensors.OpenDir(in.Model)
	if in.Base != "" {
		env.BaseWeights, env.BaseWeightsErr = safetensors.OpenDir(in.Base)
		env.BaseConfig, _ = mllama.LoadConfig(filepath.Join(in.Base, "config.json"))
	}
	env.Config, env.ConfigErr = mllama.LoadConfig(filepath.Join(in.Model, "config.json"))
	if env.Weights != nil {
		sc, err := runScan(ctx, env.Weights, env.BaseWeights, in.Source, in.Jobs)
		if err != nil {
			env.Close()
			return nil, err
		}
		env.Scan = sc
	}
	return env, nil
}

// Close releases the open weights.
func (e *Env) Close() {
	if e.Weights != nil {
		e.Weights.Close()
	}
	if e.BaseWeights != nil {
		e.BaseWeights.Close()
	}
}

// Run opens the inputs, runs every check and returns the report. A check
// that returns an error is recorded as a failed finding and its error joined
// into the returned error (exit code 3); check failures are only in the
// report.
func Run(ctx context.Context, in *Inputs, checks []*Check) (*reports.Report, error) {
	if in.Policy == nil {
		p, _ := LoadPolicy("")
		in.Policy = p
	}
	if in.Jobs <= 0 {
		in.Jobs = runtime.GOMAXPROCS(0)
	}
	r := reports.New("verify")
	r.Inputs["model"] = in.Model
	if in.Base != "" {
		r.Inputs["base"] = in.Base
	}
	if in.SourcePath != "" {
		r.Inputs["source"] = in.SourcePath
	}
	if in.Golden != "" {
		r.Inputs["golden"] = in.Golden
	}
	if in.Manifest != "" {
		r.Inputs["manifest"] = in.Manifest
	}
	r.Inputs["policy"] = in.Policy.Name
	t0 := time.Now()
	env, err := Open(ctx, in)
	if err != nil {
		return nil, err
	}
	defer env.Close()
	r.Timings["scan"] = time.Since(t0).Seconds()
	if in.ManifestOut != "" && env.Scan != nil {
		if err := writeManifest(in.ManifestOut, ManifestOf(env.Scan)); err != nil {
			return nil, err
		}
	}
	if env.Config != nil {
		r.Toolchain.Transformers = env.Config.TransformersVersion
	}
	var errs []error
	t1 := time.Now()
	for _, c := range checks {
		p := &Pass{Check: c, Inputs: in, Env: env}
		if missing := missingInputs(c, in); missing != "" {
			p.Skipf("", "needs %s", missing)
			r.Add(p.findings...)
			continue
		}
		if err := safeRun(c, p); err != nil {
			p.Report(reports.StatusFail, "", fmt.Sprintf("internal error: %v", err), nil)
			errs = append(errs, fmt.Errorf("check %s: %w", c.ID, err))
		}
		if len(p.findings) == 0 {
			p.Passf("", "no findings")
		}
		r.Add(p.findings...)
	}
	r.Timings["checks"] = time.Since(t1).Seconds()
	return r, errors.Join(errs...)
}

// safeRun runs a check, turning a panic into an error so one broken check
// cannot take the report down.
func writeManifest(path string, m *Manifest) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := m.Write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func safeRun(c *Check, p *Pass) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return c.Run(p)
}

func missingInputs(c *Check, in *Inputs) string {
	for _, r := range c.Requires {
		switch {
		case r == NeedBase && in.Base == "":
			return "--base"
		case r == NeedSource && in.Source == nil:
			return "--source"
		case r == NeedGolden && in.Golden == "":
			return "--golden"
		}
	}
	return ""
}
