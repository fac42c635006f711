package batchq

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"unicode/utf8"
)

// MarshalExact encodes v like json.Marshal, but returns an error where
// encoding/json would silently replace bytes that are not valid UTF-8 with
// U+FFFD, so that the value a reader decodes is the value that was encoded.
func MarshalExact(v any) (json.RawMessage, error) {
	if err := checkUTF8(reflect.ValueOf(v), "", 0); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

var (
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// maxUTF8Depth bounds the walk; deeper values are left to encoding/json,
// which fails on cycles anyway.
const maxUTF8Depth = 100

// checkUTF8 walks what encoding/json would encode of v and returns an error
// naming the first string that is not valid UTF-8. Values that encode
// themselves are checked by their output.
func checkUTF8(v reflect.Value, path string, depth int) error {
	if !v.IsValid() || depth > maxUTF8Depth {
		return nil
	}
	if v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil
		}
	}
	if v.Type().Implements(jsonMarshalerType) {
		if v.Kind() == reflect.Pointer && v.IsNil() {
			return nil
		}
		out, err := v.Interface().(json.Marshaler).MarshalJSON()
		if err == nil && !utf8.Valid(out) {
			return fmt.Errorf("the value at %s is not valid UTF-8", pathOrTop(path))
		}
		return nil
	}
	if v.Type().Implements(textMarshalerType) {
		out, err := v.Interface().(encoding.TextMarshaler).MarshalText()
		if err == nil && !utf8.Valid(out) {
			return fmt.Errorf("the value at %s is not valid UTF-8", pathOrTop(path))
		}
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		if !utf8.ValidString(v.String()) {
			return fmt.Errorf("the string at %s is not valid UTF-8; encode binary data as []byte, which becomes base64", pathOrTop(path))
		}
	case reflect.Pointer, reflect.Interface:
		return checkUTF8(v.Elem(), path, depth+1)
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			k := iter.Key()
			if k.Kind() == reflect.String && !utf8.ValidString(k.String()) {
				return fmt.Errorf("a key of the map at %s is not valid UTF-8", pathOrTop(path))
			}
			if err := checkUTF8(iter.Value(), fmt.Sprintf("%s[%v]", path, k), depth+1); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return nil // bytes become base64
		}
		for i := range v.Len() {
			if err := checkUTF8(v.Index(i), fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Tag.Get("json") == "-" {
				continue
			}
			if err := checkUTF8(v.Field(i), path+"."+f.Name, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func pathOrTop(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}
