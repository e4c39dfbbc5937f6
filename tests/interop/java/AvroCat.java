// Reads Avro Object Container Files with Apache Avro's Java DataFileReader (the reader Spark,
// Hive and avro-tools use) and prints, per record: the writer schema's name once, then one line
// per record: the headers as sorted key=value pairs, a tab, and the body as hex.
// Usage: java -cp <avro and its dependencies> AvroCat.java FILE...
import java.io.File;
import java.nio.ByteBuffer;
import java.util.Map;
import java.util.TreeMap;
import org.apache.avro.file.DataFileReader;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;

public class AvroCat {
    public static void main(String[] args) throws Exception {
        for (String path : args) {
            try (DataFileReader<GenericRecord> reader =
                     new DataFileReader<>(new File(path), new GenericDatumReader<GenericRecord>())) {
                System.out.println("schema " + reader.getSchema().getFullName()
                                   + " codec " + reader.getMetaString("avro.codec"));
                for (GenericRecord rec : reader) {
                    TreeMap<String, String> headers = new TreeMap<>();
                    for (Map.Entry<?, ?> e : ((Map<?, ?>) rec.get("headers")).entrySet()) {
                        headers.put(e.getKey().toString(), e.getValue().toString());
                    }
                    ByteBuffer body = (ByteBuffer) rec.get("body");
                    StringBuilder hex = new StringBuilder();
                    while (body.hasRemaining()) {
                        hex.append(String.format("%02x", body.get()));
                    }
                    System.out.println(headers + "\t" + hex);
                }
            }
        }
    }
}
