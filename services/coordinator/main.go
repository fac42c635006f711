// Command coordinator runs the batchq coordinator against a NATS server, like
// "batchq coordinator". Run "coordinator -h" for its flags.
package main

import (
	"os"

	"github.com/batchq/batchq/services/internal/cli"
)

func main() {
	os.Exit(cli.Coordinator(cli.OSEnv(), "coordinator", os.Args[1:]))
}
