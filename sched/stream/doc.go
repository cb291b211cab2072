// Package stream holds the two ends of Paddock's ordered task streams (the client API's
// TaskService.Stream): Reorder, the server's window that holds results finishing early
// until those before them are delivered, and Client, the Go helper that opens a stream,
// sends payloads within the window and receives results in submission order.
//
// A stream runs tasks of one type. At most W (the window) items are outstanding: sent by
// the client and their result not yet delivered. The server enforces it by reading no
// item past W (HTTP/2 flow control then holds the client back) and buffers at most W
// results for a client that stops reading. The server side lives in package sched
// (streamapi.go), which dispatches a durable stream's tasks through the store and a
// transient stream's from memory. Client's Send queues the item for a writer goroutine
// that sends at once what is queued: one item alone when nothing else waits, the items
// queued while it was sending as one StreamItems (when the server takes them,
// StreamOpened.batch_items; single items to an older server). Client asks for batched results
// (StreamOpen.batch_results: the results the server has ready at once come in one
// message) and returns them one by one from Recv.
//
// Tests: go test ./sched/stream/ (logic) and, with real agents and handler
// subprocesses, go test ./sched/ -run TestStream (PADDOCK_STREAM_N=100000 for the full
// 100,000-task run).
package stream
