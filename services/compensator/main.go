// Command compensator runs the batchq compensator against a NATS server, like
// "batchq compensator". Run "compensator -h" for its flags.
package main

import (
	"os"

	"github.com/batchq/batchq/services/internal/cli"
)

func main() {
	os.Exit(cli.Compensator(cli.OSEnv(), "compensator", os.Args[1:]))
}
