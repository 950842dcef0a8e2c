// Payload comparison by value: JSON against JSON (SQLite), and JSON
// against BSON (MongoDB), where every number must also carry the BSON type
// the sink's rules give it: int32 or int64 when integral and in range, else
// a double when the double's shortest printing is the same number, else
// Decimal128.  Keys are compared as data: {"$date": "x"} must stay a plain
// field.

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func decodeJSON(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func ratOf(s string) (*big.Rat, error) {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil, fmt.Errorf("%q is not a number", s)
	}
	return r, nil
}

func sameJSON(want, got json.RawMessage) error {
	w, err := decodeJSON(want)
	if err != nil {
		return fmt.Errorf("ledger.read payload: %w", err)
	}
	g, err := decodeJSON(got)
	if err != nil {
		return fmt.Errorf("export payload %.60q is not JSON: %w", got, err)
	}
	return sameValue(w, g, "$")
}

func sameValue(w, g any, path string) error {
	switch w := w.(type) {
	case map[string]any:
		gm, ok := g.(map[string]any)
		if !ok || len(gm) != len(w) {
			return fmt.Errorf("%s: %v, want %v", path, g, w)
		}
		for k, wv := range w {
			gv, ok := gm[k]
			if !ok {
				return fmt.Errorf("%s: key %q missing", path, k)
			}
			if err := sameValue(wv, gv, path+"."+k); err != nil {
				return err
			}
		}
	case []any:
		ga, ok := g.([]any)
		if !ok || len(ga) != len(w) {
			return fmt.Errorf("%s: %v, want %v", path, g, w)
		}
		for i := range w {
			if err := sameValue(w[i], ga[i], fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case json.Number:
		gn, ok := g.(json.Number)
		if !ok {
			return fmt.Errorf("%s: %v, want the number %s", path, g, w)
		}
		wr, err1 := ratOf(w.String())
		gr, err2 := ratOf(gn.String())
		if err1 != nil || err2 != nil || wr.Cmp(gr) != 0 {
			return fmt.Errorf("%s: %s, want %s", path, gn, w)
		}
	default:
		if w != g {
			return fmt.Errorf("%s: %v, want %v", path, g, w)
		}
	}
	return nil
}

func sameJSONBSON(want json.RawMessage, got any) error {
	w, err := decodeJSON(want)
	if err != nil {
		return fmt.Errorf("ledger.read payload: %w", err)
	}
	rv, ok := got.(bson.RawValue)
	if !ok {
		return fmt.Errorf("no BSON payload")
	}
	return sameBSON(w, rv, "$")
}

// expectedNumberType applies the sink's rules to a JSON number.
func expectedNumberType(n json.Number) (bson.Type, *big.Rat, error) {
	r, err := ratOf(n.String())
	if err != nil {
		return 0, nil, err
	}
	if r.IsInt() {
		i := r.Num()
		if i.IsInt64() {
			v := i.Int64()
			if v >= math.MinInt32 && v <= math.MaxInt32 {
				return bson.TypeInt32, r, nil
			}
			return bson.TypeInt64, r, nil
		}
	}
	if f, err := strconv.ParseFloat(n.String(), 64); err == nil && f != 0 && !math.IsInf(f, 0) {
		if s, err := ratOf(strconv.FormatFloat(f, 'g', -1, 64)); err == nil && s.Cmp(r) == 0 {
			return bson.TypeDouble, r, nil
		}
	}
	return bson.TypeDecimal128, r, nil
}

func sameBSON(w any, g bson.RawValue, path string) error {
	switch w := w.(type) {
	case map[string]any:
		doc, ok := g.DocumentOK()
		if !ok {
			return fmt.Errorf("%s: BSON %s, want a document", path, g.Type)
		}
		elems, err := doc.Elements()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(elems) != len(w) {
			return fmt.Errorf("%s: %d fields, want %d (%s)", path, len(elems), len(w), doc)
		}
		for _, e := range elems {
			wv, ok := w[e.Key()]
			if !ok {
				return fmt.Errorf("%s: unexpected field %q", path, e.Key())
			}
			if err := sameBSON(wv, e.Value(), path+"."+e.Key()); err != nil {
				return err
			}
		}
	case []any:
		arr, ok := g.ArrayOK()
		if !ok {
			return fmt.Errorf("%s: BSON %s, want an array", path, g.Type)
		}
		vals, err := arr.Values()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(vals) != len(w) {
			return fmt.Errorf("%s: %d elements, want %d", path, len(vals), len(w))
		}
		for i := range w {
			if err := sameBSON(w[i], vals[i], fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case string:
		if s, ok := g.StringValueOK(); !ok || s != w {
			return fmt.Errorf("%s: %s, want the string %q", path, g, w)
		}
	case bool:
		if b, ok := g.BooleanOK(); !ok || b != w {
			return fmt.Errorf("%s: %s, want %v", path, g, w)
		}
	case nil:
		if g.Type != bson.TypeNull {
			return fmt.Errorf("%s: %s, want null", path, g)
		}
	case json.Number:
		typ, want, err := expectedNumberType(w)
		if err != nil {
			return err
		}
		if g.Type != typ {
			return fmt.Errorf("%s: %s is BSON %s, want %s for %s", path, g, g.Type, typ, w)
		}
		var got *big.Rat
		switch g.Type {
		case bson.TypeInt32:
			got = new(big.Rat).SetInt64(int64(g.Int32()))
		case bson.TypeInt64:
			got = new(big.Rat).SetInt64(g.Int64())
		case bson.TypeDouble:
			got, err = ratOf(strconv.FormatFloat(g.Double(), 'g', -1, 64))
		case bson.TypeDecimal128:
			got, err = ratOf(g.Decimal128().String())
		}
		if err != nil || got.Cmp(want) != 0 {
			return fmt.Errorf("%s: %s, want %s", path, g, w)
		}
	default:
		return fmt.Errorf("%s: unexpected JSON value %v", path, w)
	}
	return nil
}
