package sqlite

// Commits counts the transactions committed by every store of this process.
var Commits = &commits
