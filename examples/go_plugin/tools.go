package main

// The plugin's two tools. Each takes the call's context (it ends at the
// caller's deadline or cancellation) and the arguments as plain JSON values;
// it returns a JSON-compatible value, or an error that the model is shown as
// an is_error result.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// maxBelow bounds count_primes' work (a few seconds of one core); the schema
// says so and the tool checks it again, since any local process may call us.
const maxBelow = 10_000_000

// primeSlots bounds how many count_primes runs at once: each holds a core.
var primeSlots = make(chan struct{}, 4)

// tool is one tool as registered and as run.
type tool struct {
	description string
	parameters  map[string]any
	async       bool   // TOOL_MODE_ASYNC: the model gets ack at once, the result later
	ack         string // ASYNC only: what the model is told at once
	run         func(ctx context.Context, args map[string]any) (any, error)
}

var tools = map[string]tool{
	"weekday": {
		description: "Tell the weekday and the day of the year of a calendar date (YYYY-MM-DD).",
		parameters: map[string]any{
			"type": "object",
			"properties": map[string]any{
				"date": map[string]any{
					"type": "string", "pattern": `^\d{4}-\d{2}-\d{2}$`,
					"description": "The date, for example 2026-12-03.",
				},
			},
			"required":             []any{"date"},
			"additionalProperties": false,
		},
		run: weekday,
	},
	"count_primes": {
		description: "Count the prime numbers below a limit (up to ten million); runs in the background.",
		parameters: map[string]any{
			"type": "object",
			"properties": map[string]any{
				"below": map[string]any{
					"type": "integer", "minimum": 2, "maximum": maxBelow,
					"description": "Count the primes smaller than this.",
				},
			},
			"required":             []any{"below"},
			"additionalProperties": false,
		},
		async: true,
		ack:   "Counting primes; the result will follow.",
		run:   countPrimes,
	},
}

// errInvalid marks arguments the tool cannot use (the registry validated them
// against the schema, but a caller on loopback may skip the registry).
var errInvalid = errors.New("INVALID_ARGUMENT")

func weekday(_ context.Context, args map[string]any) (any, error) {
	date, ok := args["date"].(string)
	if !ok {
		return nil, fmt.Errorf("%w: date must be a string", errInvalid)
	}
	day, err := time.Parse(time.DateOnly, date)
	if err != nil {
		// The schema's pattern lets 2026-02-30 through: a tool error, not a crash.
		return nil, fmt.Errorf("%q is not a calendar date", date)
	}
	return map[string]any{"date": date, "weekday": day.Weekday().String(), "day_of_year": day.YearDay()}, nil
}

func countPrimes(ctx context.Context, args map[string]any) (any, error) {
	limit, ok := args["below"].(float64) // JSON numbers arrive as float64
	if !ok || limit != math.Trunc(limit) || limit < 2 || limit > maxBelow {
		return nil, fmt.Errorf("%w: below must be an integer from 2 to %d", errInvalid, maxBelow)
	}
	select {
	case primeSlots <- struct{}{}:
		defer func() { <-primeSlots }()
	default:
		return nil, fmt.Errorf("RESOURCE_EXHAUSTED: %d counts are running already; try again later", cap(primeSlots))
	}
	below, count := int(limit), 0
	for n := 2; n < below; n++ {
		// Stop soon after the caller's deadline or cancellation: nobody reads the answer.
		if n%16384 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if isPrime(n) {
			count++
		}
	}
	return map[string]any{"below": below, "primes": count}, nil
}

func isPrime(n int) bool {
	if n%2 == 0 {
		return n == 2
	}
	for d := 3; d*d <= n; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}
