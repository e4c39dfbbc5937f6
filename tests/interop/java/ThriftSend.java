import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.flume.Event;
import org.apache.flume.api.RpcClient;
import org.apache.flume.api.RpcClientFactory;
import org.apache.flume.event.EventBuilder;

/**
 * Sends a file's lines through Flume's own ThriftRpcClient, built by RpcClientFactory from
 * properties exactly as Flume's ThriftSink builds it (client.type = thrift).
 *
 * Arguments: HOST PORT PROTOCOL(compact|binary) FILE BATCH [KEY=VALUE ...]
 * Each event carries the given headers plus "seq" (its line number). Prints "SENT n" and exits 0
 * when every batch was accepted; an exception ends it with a non-zero exit.
 */
public class ThriftSend {
  public static void main(String[] args) throws Exception {
    Properties props = new Properties();
    props.setProperty("client.type", "thrift");
    props.setProperty("hosts", "h1");
    props.setProperty("hosts.h1", args[0] + ":" + args[1]);
    props.setProperty("protocol", args[2]);
    props.setProperty("batch-size", args[4]);
    int batchSize = Integer.parseInt(args[4]);
    Map<String, String> headers = new HashMap<>();
    for (int i = 5; i < args.length; i++) {
      String[] kv = args[i].split("=", 2);
      headers.put(kv[0], kv[1]);
    }
    RpcClient client = RpcClientFactory.getInstance(props);
    List<String> lines = Files.readAllLines(Paths.get(args[3]), StandardCharsets.UTF_8);
    List<Event> batch = new ArrayList<>();
    int sent = 0;
    try {
      for (int i = 0; i < lines.size(); i++) {
        Map<String, String> h = new HashMap<>(headers);
        h.put("seq", Integer.toString(i));
        batch.add(EventBuilder.withBody(lines.get(i).getBytes(StandardCharsets.UTF_8), h));
        if (batch.size() == batchSize || i == lines.size() - 1) {
          client.appendBatch(batch);
          sent += batch.size();
          batch.clear();
        }
      }
    } finally {
      client.close();
    }
    System.out.println("SENT " + sent);
  }
}
