package chatdb

// PageSQL is MessagesPage's statement, for the test that checks its plan.
const PageSQL = pageSQL
