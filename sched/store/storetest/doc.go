// Package storetest is the contract suite every store.Store implementation must pass.
// A backend's test calls Run with a constructor of empty stores:
//
//	func TestContract(t *testing.T) { storetest.Run(t, func(t *testing.T) store.Store { ... }) }
package storetest
