package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/keyward/keyward/client"
)

// Verify a key from your own code. A refused key is not an error: read
// Valid and Code.
func ExampleClient_Verify() {
	kw, err := client.New("http://127.0.0.1:8080", os.Getenv("KEYWARD_SECRET"))
	if err != nil {
		log.Fatal(err)
	}
	res, err := kw.Verify(context.Background(), os.Getenv("API_KEY"), "coupons:read", "web-shop")
	switch {
	case err != nil:
		log.Printf("keyward: %v", err) // ErrBadSecret, *UnavailableError, *TransportError, *StatusError
	case res.Valid:
		fmt.Println("allowed:", res.KeyID, res.Role)
	default:
		fmt.Println("refused:", res.Code)
	}
}

// Guard a handler: only requests with a key VALID for coupons:read on
// web-shop reach it, with the key's id and role in their context.
func ExampleMiddleware() {
	kw, err := client.New("http://127.0.0.1:8080", os.Getenv("KEYWARD_SECRET"))
	if err != nil {
		log.Fatal(err)
	}
	coupons := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := client.FromContext(r.Context())
		fmt.Fprintf(w, "coupons for %s (%s)\n", id.KeyID, id.Role)
	})
	mux := http.NewServeMux()
	mux.Handle("/coupons", client.Middleware(kw, "coupons:read", "web-shop")(coupons))
	log.Fatal(http.ListenAndServe("127.0.0.1:9000", mux))
}
