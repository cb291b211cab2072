package contract

import "testing"

func TestValidateTypes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []TaskType
		wantErr bool
	}{
		{"ok", []TaskType{{Name: "a", Version: "1"}, {Name: "b", Version: "1", Concurrency: 2}}, false},
		{"none", nil, true},
		{"no name", []TaskType{{Version: "1"}}, true},
		{"no version", []TaskType{{Name: "a"}}, true},
		{"negative concurrency", []TaskType{{Name: "a", Version: "1", Concurrency: -1}}, true},
		{"twice", []TaskType{{Name: "a", Version: "1"}, {Name: "a", Version: "2"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateTypes(tc.in); (err != nil) != tc.wantErr {
				t.Fatalf("ValidateTypes(%v) = %v, want error %v", tc.in, err, tc.wantErr)
			}
		})
	}
}
