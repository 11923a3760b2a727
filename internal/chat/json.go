package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ardanlabs/jinja"
	"github.com/ckptgate/ckptgate/internal/boundedio"
)

// MaxJSONDepth bounds the nesting of messages and tools JSON. Python's json
// module gives up near 1000 levels too; no chat needs more.
const MaxJSONDepth = 512

// DecodeJSON decodes one JSON document into a template value that keeps the
// document's key order, as Python's json.loads does. Order matters: tojson
// prints keys in insertion order, and the tool schemas in a prompt are
// printed that way. Integers stay integers and floats stay floats, so that
// tojson prints 21 and 1.0 as Python would.
func DecodeJSON(b []byte) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return jinja.Undefined(), err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return jinja.Undefined(), err
		}
		return jinja.Undefined(), errors.New("trailing data after the JSON value")
	}
	return v, nil
}

// LoadJSON reads a JSON file of at most MaxSideFileSize bytes with
// DecodeJSON; errors name the file.
func LoadJSON(path string) (jinja.Value, error) {
	b, err := boundedio.ReadFile(path, MaxSideFileSize)
	if err != nil {
		return jinja.Undefined(), err
	}
	v, err := DecodeJSON(b)
	if err != nil {
		return jinja.Undefined(), fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, depth int) (jinja.Value, error) {
	if depth > MaxJSONDepth {
		return jinja.Undefined(), fmt.Errorf("JSON nested deeper than %d levels", MaxJSONDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return jinja.Undefined(), err
	}
	switch t := tok.(type) {
	case nil:
		return jinja.None(), nil
	case bool:
		return jinja.NewBool(t), nil
	case string:
		return jinja.NewString(t), nil
	case json.Number:
		return decodeNumber(t)
	case json.Delim:
		switch t {
		case '{':
			d := jinja.NewDict()
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return jinja.Undefined(), err
				}
				key, ok := k.(string)
				if !ok {
					return jinja.Undefined(), fmt.Errorf("object key is %v, not a string", k)
				}
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return jinja.Undefined(), err
				}
				// A repeated key keeps its first position and takes the
				// last value, as a Python dict built by json.loads does.
				d.AsDict().Set(key, v)
			}
			if _, err := dec.Token(); err != nil {
				return jinja.Undefined(), err
			}
			return d, nil
		case '[':
			items := []jinja.Value{}
			for dec.More() {
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, v)
			}
			if _, err := dec.Token(); err != nil {
				return jinja.Undefined(), err
			}
			return jinja.NewList(items), nil
		}
	}
	return jinja.Undefined(), fmt.Errorf("unexpected JSON token %v", tok)
}

func decodeNumber(n json.Number) (jinja.Value, error) {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		i, err := n.Int64()
		if err != nil {
			// Python keeps arbitrary-precision integers; a float would
			// print other digits, so refuse rather than render wrongly.
			return jinja.Undefined(), fmt.Errorf("integer %s does not fit in 64 bits", s)
		}
		return jinja.NewInt(i), nil
	}
	f, err := n.Float64()
	if err != nil {
		return jinja.Undefined(), fmt.Errorf("number %s: %w", s, err)
	}
	return jinja.NewFloat(f), nil
}
