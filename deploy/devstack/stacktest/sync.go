package stacktest

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/chatpoc/chat-poc/workflows"
)

// SyncStatus queries the sync workflow's status through tc.
func SyncStatus(ctx context.Context, tc client.Client) (workflows.Status, error) {
	var st workflows.Status
	v, err := tc.QueryWorkflow(ctx, workflows.WorkflowID, "", workflows.QueryStatus)
	if err == nil {
		err = v.Get(&st)
	}
	return st, err
}

// SetFaults replaces the faults the external service at baseURL injects
// (body is the JSON of PUT /admin/faults; token its admin bearer token).
func SetFaults(t testing.TB, baseURL, token, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, baseURL+"/admin/faults", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("set faults: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		t.Fatalf("set faults %s: %s", body, resp.Status)
	}
}
