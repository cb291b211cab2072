// Package rowcodec converts store.Task fields to and from the columns the SQL stores
// (store/sqlite, store/postgres) share: times as Unix milliseconds (0: unset), maps and
// requirements as JSON. It has no database code; its tests are the stores' contract
// suite.
package rowcodec
