package change

// The dead-letter contract: where a record or a feed change that cannot be
// applied goes, and the headers that say why and where it came from. The
// writer (records it cannot store) and the sync (feed changes it cannot
// publish) both follow it, so one procedure reads and replays either.

// DeadLetterSuffix names a source's dead-letter topic: DeadLetterTopic.
const DeadLetterSuffix = ".dlq"

// DeadLetterTopic is the dead-letter topic of source: a topic's base name
// without a MirrorMaker 2 prefix ("chat-messages" → "chat-messages.dlq"),
// or FeedSource for the sync's.
func DeadLetterTopic(source string) string { return source + DeadLetterSuffix }

// FeedSource names external's change feed as a source of dead letters: the
// sync sends a change it cannot publish to DeadLetterTopic(FeedSource),
// "external-feed.dlq", on the cluster that took the change's page.
const FeedSource = "external-feed"

// Headers of a dead letter, added to the original record's (the writer's)
// or to the change's kind and the publisher's worker and attempt (the
// sync's). The key and value are the original's — a feed change's value is
// the change's JSON exactly as the feed sent it — so it can be replayed.
const (
	HeaderError = "error" // why it could not be applied (no content quoted)

	// A record the writer could not store.
	HeaderSourceCluster   = "source-cluster"   // the cluster it was read from
	HeaderSourceTopic     = "source-topic"     // its topic there
	HeaderSourcePartition = "source-partition" // its partition, in decimal
	HeaderSourceOffset    = "source-offset"    // its offset, in decimal

	// A feed change the sync could not publish.
	HeaderSourceCursor = "source-cursor" // the cursor its page was polled after ("" = the feed's start)
	HeaderSourceIndex  = "source-index"  // its position in that page, from 1, in decimal
	// HeaderTruncatedFrom is set when the value is only the start of the
	// original, cut to fit a Kafka record: the original's size in bytes,
	// in decimal.
	HeaderTruncatedFrom = "truncated-from"
)
