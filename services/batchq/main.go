// Command batchq runs batchq services and demos: "batchq dev" runs
// everything in one process, "batchq demo" runs a built-in demo, and
// "batchq coordinator", "batchq executor" and "batchq compensator" run one
// service against a NATS server. Run "batchq -h" for the list.
package main

import (
	"os"

	"github.com/batchq/batchq/services/internal/cli"
)

func main() {
	os.Exit(cli.Main(cli.OSEnv(), os.Args[1:]))
}
