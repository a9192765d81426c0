// Command pause holds a pod sandbox's namespaces, as the upstream pause image does: it waits
// for SIGINT or SIGTERM and reaps the zombies of processes that share its PID namespace.
// hack/node.py builds it statically and wraps it in a one-layer image; no registry is needed.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 16)
	signal.Notify(children, syscall.SIGCHLD)
	go func() {
		for range children {
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}()
	<-stop
}
