import Foundation
FileHandle.standardError.write(Data("ingest: not implemented yet\n".utf8))
exit(2)
