// Command journalhandler is the chaos test's handler (package internal/chaos). It serves
// one task type, chaos.run: it sleeps for the duration in the payload ("40ms"), honouring
// ctx, and returns "<task id> attempt <n> pid <pid>". Around each call it appends a line
// to the journal file named by $PADDOCK_CHAOS_JOURNAL:
//
//	start <task id> <attempt> <pid> <unix ns>
//	done <task id> <attempt> <pid> <unix ns>
//
// so that the test sees every execution that ran to completion, whatever the server
// recorded: two completed executions of one task that overlap in time ran on two
// leases at once.
package main
