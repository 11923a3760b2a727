package reports

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/ckptgate/ckptgate/internal/boundedio"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// SchemaURL is the $id of schema.json, the JSON Schema (draft 2020-12) of
// report.json. Its $defs hold the plotted Details shapes:
// SchemaURL+"#/$defs/DriftDetails", "#/$defs/SourceDetails" and
// "#/$defs/LogitsDetails".
const SchemaURL = "https://github.com/ckptgate/ckptgate/reports/schema.json"

//go:embed schema.json
var schemaJSON []byte

// SchemaJSON returns the JSON Schema of report.json.
func SchemaJSON() []byte { return bytes.Clone(schemaJSON) }

var compileSchemas = sync.OnceValues(func() (*jsonschema.Compiler, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, fmt.Errorf("reports: embedded schema.json: %w", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaURL, doc); err != nil {
		return nil, fmt.Errorf("reports: embedded schema.json: %w", err)
	}
	return c, nil
})

var (
	schemaMu    sync.Mutex
	schemaCache = map[string]*jsonschema.Schema{}
)

// compiled returns the schema at ref ("" for the whole report, or a $defs
// name such as "DriftDetails").
func compiled(ref string) (*jsonschema.Schema, error) {
	c, err := compileSchemas()
	if err != nil {
		return nil, err
	}
	schemaMu.Lock()
	defer schemaMu.Unlock()
	if s, ok := schemaCache[ref]; ok {
		return s, nil
	}
	loc := SchemaURL
	if ref != "" {
		loc += "#/$defs/" + ref
	}
	s, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("reports: schema %s: %w", loc, err)
	}
	schemaCache[ref] = s
	return s, nil
}

// ValidateJSON checks a report.json document against the schema.
func ValidateJSON(doc []byte) error { return validate("", doc) }

// ValidateDetails checks one Details value against a shape of the schema's
// $defs ("DriftDetails", "SourceDetails" or "LogitsDetails").
func ValidateDetails(shape string, details []byte) error { return validate(shape, details) }

func validate(ref string, doc []byte) error {
	s, err := compiled(ref)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if err := s.Validate(inst); err != nil {
		return err
	}
	return nil
}

// MaxReportSize bounds the report.json that ReadFile accepts; real reports
// are a few megabytes at most.
const MaxReportSize = 256 << 20

// ErrInvalid is wrapped by ReadFile's errors for files that are not a valid
// report (bad JSON, schema violations, too large).
var ErrInvalid = errors.New("invalid report")

// ReadFile reads a report.json, checks it against the schema and decodes it.
// Unlike Load it refuses anything the schema refuses, so that renderers only
// ever see well-formed reports from disk.
func ReadFile(path string) (*Report, error) {
	b, err := boundedio.ReadFile(path, MaxReportSize)
	if errors.Is(err, boundedio.ErrTooLarge) {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err != nil {
		return nil, err
	}
	if err := ValidateJSON(b); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrInvalid, err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrInvalid, err)
	}
	return &r, nil
}
