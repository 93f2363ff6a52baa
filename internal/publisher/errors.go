package publisher

import (
	"errors"
	"fmt"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// step names the part of a transaction that failed, in errors.
type step string

const (
	stepInit    step = "init transactions"
	stepBegin   step = "begin transaction"
	stepProduce step = "produce"
	stepDeliver step = "deliver"
	stepCommit  step = "commit transaction"
	stepConfirm step = "confirm commit"
)

// kind is what a non-fatal failure means for the cluster and the batch.
type kind int

const (
	// kindAbortable: the cluster works; abort and let the caller retry.
	kindAbortable kind = iota
	// kindRejected: the cluster works but refuses a record for good.
	kindRejected
	// kindDown: the cluster did not answer, or the outcome is unknown; fail over.
	kindDown
)

// errDeliveryTimeout marks delivery reports that did not arrive in time.
var errDeliveryTimeout = errors.New("delivery reports timed out")

// clusterDown is a failure that makes Publish try the next cluster.
type clusterDown struct{ err error }

func (e *clusterDown) Error() string {
	return fmt.Sprintf("unreachable: %v", e.err) // e.err names the cluster
}
func (e *clusterDown) Unwrap() error { return e.err }

// classify says what a non-fatal err of step s means. Fencing and fatal
// errors are recognised before, from the producer's state.
func classify(s step, err error) kind {
	switch s {
	case stepInit:
		// Init only talks to the transaction coordinator: whatever stops it
		// stops every transaction on this cluster.
		return kindDown
	case stepBegin:
		// Local state only: nothing to abort, the cluster is not in question.
		return kindAbortable
	case stepCommit:
		var kerr kafka.Error
		if errors.As(err, &kerr) && kerr.TxnRequiresAbort() {
			return kindAbortable
		}
		// Timed out or failed half-way: the commit may or may not have
		// happened, and this producer's state is unknown.
		return kindDown
	case stepDeliver:
		if errors.Is(err, errDeliveryTimeout) {
			return kindDown
		}
	}
	var kerr kafka.Error
	if !errors.As(err, &kerr) {
		return kindAbortable
	}
	switch kerr.Code() {
	case kafka.ErrMsgSizeTooLarge, kafka.ErrRecordListTooLarge, kafka.ErrInvalidMsgSize,
		kafka.ErrTopicException, kafka.ErrUnknownTopic, kafka.ErrInvalidRecord,
		kafka.ErrPolicyViolation, kafka.ErrTopicAuthorizationFailed, kafka.ErrInvalidArg:
		return kindRejected
	case kafka.ErrMsgTimedOut, kafka.ErrTimedOut, kafka.ErrTimedOutQueue, kafka.ErrTransport,
		kafka.ErrAllBrokersDown, kafka.ErrResolve, kafka.ErrRequestTimedOut, kafka.ErrNetworkException:
		return kindDown
	}
	return kindAbortable
}

// deliveryRank orders delivery errors by how much they tell: a record the
// cluster refused explains a failed batch better than the purges and state
// errors the other records get as a consequence.
func deliveryRank(err error) int {
	switch classify(stepProduce, err) {
	case kindRejected:
		return 2
	case kindDown:
		return 1
	}
	return 0
}

// isFenced reports whether err says this producer was fenced or failed
// fatally (the producer's fatal error state is checked separately).
func isFenced(err error) bool {
	var kerr kafka.Error
	if !errors.As(err, &kerr) {
		return false
	}
	if kerr.IsFatal() {
		return true
	}
	switch kerr.Code() {
	case kafka.ErrFenced, kafka.ErrProducerFenced, kafka.ErrInvalidProducerEpoch, kafka.ErrFatal:
		return true
	}
	return false
}
