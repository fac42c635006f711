// Command executor runs the batchq executor against a NATS server, like
// "batchq executor". Run "executor -h" for its flags.
package main

import (
	"os"

	"github.com/batchq/batchq/services/internal/cli"
)

func main() {
	os.Exit(cli.Executor(cli.OSEnv(), "executor", os.Args[1:]))
}
