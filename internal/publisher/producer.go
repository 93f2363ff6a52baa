package publisher

import (
	"log/slog"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/chatpoc/chat-poc/internal/kafkaclient"
)

// Producer tuning for pages of up to ~1000 small JSON records.
const (
	// lingerMs is 0: a page's records are produced in one burst and the
	// commit waits for all of them, so lingering only adds latency (5 ms cost
	// 5 ms per page at 200 changes/s); records queued while a request is in
	// flight still leave together in the next one.
	lingerMs = 0
	// eventsChannelSize replaces the Go client's default of 1,000,000 slots
	// (16 MB per producer): Events() carries only client errors here (delivery
	// reports go to per-call channels) and is drained continuously.
	eventsChannelSize = 1000
)

// txnProducer is the transactional producer of one cluster.
type txnProducer struct {
	cluster Cluster
	kp      *kafka.Producer
	admin   *kafka.AdminClient // on kp's connections: confirms commits
	inTxn   bool               // a transaction was begun and neither committed nor aborted
}

// producerConfig is what transactions require (idempotence, acks=all, at
// most 5 requests in flight) plus batching for small pages.
func producerConfig(c Cluster, opts Options) *kafka.ConfigMap {
	cm := &kafka.ConfigMap{
		"bootstrap.servers":                     c.Bootstrap,
		"client.id":                             opts.ClientID,
		"transactional.id":                      opts.TransactionalID,
		"transaction.timeout.ms":                int(opts.TransactionTimeout / time.Millisecond),
		"enable.idempotence":                    true,
		"acks":                                  "all",
		"max.in.flight.requests.per.connection": 5,
		"linger.ms":                             lingerMs,
		// A transaction is a handful of small request/response round trips
		// (add partitions, produce, end transaction); Nagle's algorithm would
		// hold each small request back waiting for the previous one's ACK.
		"socket.nagle.disable": true,
		"compression.type":     "lz4",
		// Java clients' partitioner, so that a key lands on the same partition
		// whichever client wrote it (librdkafka's default is crc32-based).
		"partitioner": "murmur2_random",
		// Every Produce names its own delivery channel; with this off a report
		// can never land on Events() unread.
		"go.delivery.reports": false,
		// Reports are only looked at for their error: do not copy keys and
		// values back.
		"go.delivery.report.fields": "none",
		"go.events.channel.size":    eventsChannelSize,
		// librdkafka's log (connection refused, ...) goes to our logger
		// instead of stderr.
		"go.logs.channel.enable": true,
	}
	if opts.Debug != "" {
		cm.SetKey("debug", opts.Debug)
	}
	return cm
}

// newTxnProducer creates the producer of c and starts draining its events
// and logs. It does no I/O of its own; InitTransactions is the caller's.
func newTxnProducer(c Cluster, opts Options, log *slog.Logger) (*txnProducer, error) {
	kp, err := kafka.NewProducer(producerConfig(c, opts))
	if err != nil {
		return nil, err
	}
	admin, err := kafka.NewAdminClientFromProducer(kp)
	if err != nil {
		kp.Close()
		return nil, err
	}
	Drain(kp, log.With("cluster", c.Name), opts.Debug != "")
	return &txnProducer{cluster: c, kp: kp, admin: admin}, nil
}

// Drain serves kp's Events() and Logs() channels until kp is closed (Close
// closes both), so that librdkafka's poller never waits for us: client
// errors go to log at debug level (a fatal one at error), librdkafka's log as
// kafkaclient.ForwardLogs says (debug: its debug contexts are on).
func Drain(kp *kafka.Producer, log *slog.Logger, debug bool) {
	go func() {
		for ev := range kp.Events() {
			err, ok := ev.(kafka.Error)
			switch {
			case !ok:
			case err.IsFatal():
				// The producer is unusable: every send fails from now on
				// (its owner finds out from them), and this says why.
				log.Error("Kafka producer failed fatally", "err", err)
			default:
				log.Debug("kafka client error", "err", err)
			}
		}
	}()
	kafkaclient.ForwardLogs(kp.Logs(), log, debug)
}
