package kvstore

import (
	"fmt"
	"strconv"
	"strings"
)

func batchKey(id string) string { return "b." + id }

func jobKey(batchID, jobID string) string { return "j." + batchID + "." + jobID }

func chunkKey(batchID string, first, count int) string {
	return "c." + batchID + "." + strconv.Itoa(first) + "." + strconv.Itoa(count)
}

func additionKey(batchID, addID string) string { return "a." + batchID + "." + addID }

func indexKey(batchID string, first int) string { return "x." + batchID + "." + strconv.Itoa(first) }

func outboxKey(batchID string, seq int64) string {
	return "o." + batchID + "." + strconv.FormatInt(seq, 10)
}

func undispatchedKey(batchID string) string { return "u." + batchID }

func finishedKey(batchID string) string { return "f." + batchID }

func rejectedKey(nanos int64) string { return "r." + fmt.Sprintf("%020d", nanos) }

// parseChunkKey reads first and count from a chunk key.
func parseChunkKey(key string) (first, count int, ok bool) {
	parts := strings.Split(key, ".")
	if len(parts) != 4 || parts[0] != "c" {
		return 0, 0, false
	}
	first, err1 := strconv.Atoi(parts[2])
	count, err2 := strconv.Atoi(parts[3])
	return first, count, err1 == nil && err2 == nil && first >= 0 && count > 0
}

// validKeyPart reports whether s can be one or more tokens of a key.
func validKeyPart(s string) bool {
	if s == "" || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-' || r == '_' || r == '=' || r == '.':
		default:
			return false
		}
	}
	return true
}
