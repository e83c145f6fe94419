// greeter: the gRPC helloworld Greeter (service helloworld.Greeter, method SayHello) as a
// server and a client, built on google.golang.org/grpc, for Sidelight's end-to-end tests.
// Messages are google.protobuf.StringValue (no code generation needed); the wire method
// path is /helloworld.Greeter/SayHello as in the grpc-go example.
//
//	greeter serve 127.0.0.1:PORT
//	greeter call 127.0.0.1:PORT NAME [timeout]   prints the status code name and the reply
//
// The server answers NAME "missing" with NOT_FOUND, "slow" after 2 s (for deadlines),
// "big:N" with N bytes, anything else with "Hello NAME".
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const method = "/helloworld.Greeter/SayHello"

type greeter interface {
	SayHello(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

type server struct{}

func (server) SayHello(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	name := in.GetValue()
	switch {
	case name == "missing":
		return nil, status.Error(codes.NotFound, "no such name")
	case name == "slow":
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	case strings.HasPrefix(name, "big:"):
		n, _ := strconv.Atoi(strings.TrimPrefix(name, "big:"))
		return wrapperspb.String(strings.Repeat("x", n)), nil
	}
	return wrapperspb.String("Hello " + name), nil
}

var desc = grpc.ServiceDesc{
	ServiceName: "helloworld.Greeter",
	HandlerType: (*greeter)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "SayHello",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(greeter).SayHello(ctx, in)
		},
	}},
}

func main() {
	if len(os.Args) < 3 {
		log.Fatal("usage: greeter serve ADDR | greeter call ADDR NAME [timeout]")
	}
	switch os.Args[1] {
	case "serve":
		lis, err := net.Listen("tcp", os.Args[2])
		if err != nil {
			log.Fatal(err)
		}
		s := grpc.NewServer()
		s.RegisterService(&desc, server{})
		fmt.Println("listening", os.Args[2])
		log.Fatal(s.Serve(lis))
	case "call":
		name := "world"
		if len(os.Args) > 3 {
			name = os.Args[3]
		}
		timeout := 5 * time.Second
		if len(os.Args) > 4 {
			d, err := time.ParseDuration(os.Args[4])
			if err != nil {
				log.Fatal(err)
			}
			timeout = d
		}
		conn, err := grpc.NewClient(os.Args[2], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			log.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out := new(wrapperspb.StringValue)
		err = conn.Invoke(ctx, method, wrapperspb.String(name), out)
		fmt.Println(status.Code(err).String(), len(out.GetValue()))
	default:
		log.Fatal("unknown mode ", os.Args[1])
	}
}
