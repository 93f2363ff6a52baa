package stacktest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
)

func TestFreshDatabasesAreEmptyAndSeparate(t *testing.T) {
	stack := stacktest.Connect(t)
	ctx := context.Background()
	var names []string
	for range 2 {
		conn, err := pgx.Connect(ctx, stacktest.FreshDatabase(t, stack))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var name string
		var tables int
		if err := conn.QueryRow(ctx, "SELECT current_database(), (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')").Scan(&name, &tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Errorf("fresh database %s has %d tables", name, tables)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
			t.Fatalf("the app role cannot create tables in its fresh database: %v", err)
		}
		names = append(names, name)
	}
	if names[0] == names[1] {
		t.Fatalf("two fresh databases share the name %s", names[0])
	}
}
